"""Figure 2: the lower bound against the number of training samples, AEVB against wake-sleep.

Panels as in the paper: MNIST with Nz ∈ {3, 5, 10, 20, 200} and Frey Face with Nz ∈ {2, 5, 10,
20}; in each, the bound per datapoint on the training set (solid) and the test set (dashed) for
both algorithms, with the paper's settings (§5) and the same encoder, decoder, optimiser and
minibatches for both. The paper trains each curve for 10⁸ samples; ``budget`` sets it here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..figures import plt
from ..runs import DataConfig, ModelSpec
from ..runs.layout import read_metrics
from ..training import TrainConfig
from .registry import Experiment
from .runner import FigureRun, read_summary

PANELS = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}  # §5, Fig. 2
METHODS = ("aevb", "wake-sleep")
MILESTONE_TOLERANCE = 0.005  # in log10 samples: within 1.2% of a power of ten
COLOURS = {"aevb": "tab:red", "wake-sleep": "tab:green", "mcem": "tab:blue"}
LABELS = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep", "mcem": "MCEM"}


def specs(
    budget: int,
    data_dir: str | None,
    datasets=tuple(PANELS),
    latent_dims=None,
    methods=METHODS,
    seed: int = 0,
    evals_per_decade: int = 4,
) -> list[FigureRun]:
    """The runs behind Figure 2, one per (dataset, Nz, method)."""
    runs = []
    for dataset in datasets:
        for latent_dim in PANELS[dataset]:
            if latent_dims and latent_dim not in latent_dims:
                continue
            for method in methods:
                train = TrainConfig(max_samples=budget, seed=seed, evals_per_decade=evals_per_decade)
                runs.append(
                    FigureRun(
                        name=f"{dataset}-z{latent_dim}-{method}",
                        data=DataConfig(dataset, data_dir),
                        model=ModelSpec(latent_dim=latent_dim),
                        train=train,
                        algorithm=method,
                        tags={"dataset": dataset, "latent_dim": latent_dim, "method": method},
                    )
                )
    return runs


def collect(run_specs: list[FigureRun], out: Path) -> list[dict]:
    """Every evaluation point of every run, as rows for the CSV."""
    rows = []
    for spec in run_specs:
        for line in read_metrics(out / spec.name):
            rows.append(
                {
                    **spec.tags,
                    "samples": line["samples"],
                    "train_bound": line["train_bound"],
                    "test_bound": line.get("test_bound"),
                    "seconds": line["seconds"],
                }
            )
    return rows


def draw(run_specs: list[FigureRun], out: Path, path: Path, budget: int) -> Path:
    """The figure, laid out like the paper's: MNIST panels in the top row, Frey Face below."""
    datasets = [d for d in PANELS if any(s.tags["dataset"] == d for s in run_specs)]
    columns = max(len({s.tags["latent_dim"] for s in run_specs if s.tags["dataset"] == d}) for d in datasets)
    figure, axes = plt.subplots(len(datasets), columns, figsize=(3.2 * columns, 2.9 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        dims = sorted({s.tags["latent_dim"] for s in run_specs if s.tags["dataset"] == dataset})
        for column in range(columns):
            ax = axes[row][column]
            if column >= len(dims):
                ax.set_axis_off()
                continue
            for spec in run_specs:
                if spec.tags["dataset"] != dataset or spec.tags["latent_dim"] != dims[column]:
                    continue
                plot_train_test(ax, read_metrics(out / spec.name), spec.tags["method"], "train_bound", "test_bound")
            ax.set_xscale("log")
            ax.set_title(f"{'MNIST' if dataset == 'mnist' else 'Frey Face'}, $N_z = {dims[column]}$", fontsize=9)
            ax.set_xlabel("# training samples evaluated", fontsize=8)
            if column == 0:
                ax.set_ylabel(r"$\mathcal{L}$", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, which="both")
            focus_y_axis(ax)
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Figure 2 reproduced\nlower bound per datapoint, {budget:.0e} samples per curve", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_train_test(ax, lines: list[dict], method: str, train_key: str, test_key: str) -> None:
    """One algorithm's curves in the paper's style: train solid, test dashed, one colour per method."""
    samples = [line["samples"] for line in lines]
    for key, style, split in ((train_key, "-", "train"), (test_key, "--", "test")):
        ax.plot(
            samples,
            [line.get(key) for line in lines],
            style,
            marker="o",
            markersize=2.5,
            color=COLOURS[method],
            label=f"{LABELS[method]} ({split})",
        )


def focus_y_axis(ax, lowest_share: float = 0.1) -> None:
    """Clip the y-axis to the interesting range: early, very low bounds would flatten the curves.

    The axis reaches a little below the value above the lowest ``lowest_share`` of all plotted
    points, and a little above the highest.
    """
    values = [y for line in ax.get_lines() for y in line.get_ydata() if y is not None and y == y]
    if values:
        values.sort()
        top, low = values[-1], values[int(len(values) * lowest_share)]
        spread = max(top - low, 1e-6)
        ax.set_ylim(low - 0.3 * spread, top + 0.1 * spread)


def final_table(run_specs: list[FigureRun], out: Path) -> list[dict]:
    """Final train and test bound per panel and method, and whether AEVB beats wake-sleep."""
    table = {}
    for spec in run_specs:
        summary = read_summary(out / spec.name)
        key = (spec.tags["dataset"], spec.tags["latent_dim"])
        table.setdefault(key, {"dataset": key[0], "latent_dim": key[1]})
        table[key][f"{spec.tags['method']}_train"] = summary["train_bound"]
        table[key][f"{spec.tags['method']}_test"] = summary["test_bound"]
    for row in table.values():
        if "aevb_test" in row and "wake-sleep_test" in row:
            row["aevb_beats_wake_sleep"] = (
                row["aevb_train"] > row["wake-sleep_train"] and row["aevb_test"] > row["wake-sleep_test"]
            )
    return list(table.values())


def milestone_table(run_specs: list[FigureRun], out: Path) -> list[dict]:
    """Train and test bound of every run at each power of ten of training samples it reached, for
    tables against the paper's curves. Evaluation points are log-spaced with a whole number per
    decade, so a power of ten is among them, up to the last minibatch's overshoot (Frey Face's
    epochs end on a short batch: 100,095 samples stand for 10⁵)."""
    rows = []
    for spec in run_specs:
        for line in read_metrics(out / spec.name):
            exponent = math.log10(line["samples"])
            if abs(exponent - round(exponent)) < MILESTONE_TOLERANCE:
                rows.append(
                    {
                        **spec.tags,
                        "samples": line["samples"],
                        "train_bound": line["train_bound"],
                        "test_bound": line.get("test_bound"),
                    }
                )
    return rows


def write_outputs(run_specs: list[FigureRun], out: Path, budget: int) -> list[Path]:
    rows = collect(run_specs, out)
    csv_path = out / "fig2.csv"
    with open(csv_path, "w", newline="") as stream:
        writer = csv.DictWriter(
            stream, fieldnames=["dataset", "latent_dim", "method", "samples", "train_bound", "test_bound", "seconds"]
        )
        writer.writeheader()
        writer.writerows(rows)
    table_path = out / "fig2.json"
    table_path.write_text(
        json.dumps(
            {"budget": budget, "final": final_table(run_specs, out), "milestones": milestone_table(run_specs, out)},
            indent=2,
        )
        + "\n"
    )
    return [draw(run_specs, out, out / "fig2.png", budget), csv_path, table_path]


EXPERIMENT = Experiment(
    "fig2",
    "bound vs training samples, AEVB vs wake-sleep",
    specs,
    write_outputs,
    options=("datasets", "latent_dims", "methods"),
)
