"""Figure 3: estimated marginal likelihood against training samples, AEVB, wake-sleep and Monte
Carlo EM, with Nz = 3 and 100 hidden units, for Ntrain = 1000 and 50000 MNIST training points.

At every evaluation point the marginal log-likelihood is estimated with the paper's HMC
estimator (Appendix D) on the first ``points`` datapoints of the training and test sets (the
paper: 1000). MCEM has no encoder, so its chains start from the prior. MCEM has no bound to pick
a step size with; it uses ``mcem_step_size``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..evaluation.hmc_estimator import hmc_log_likelihood
from ..figures import plt
from ..runs import DataConfig, ModelSpec
from ..runs.layout import read_metrics
from ..training import TrainConfig
from ..training.algorithms import trains_encoder
from .fig2 import focus_y_axis, plot_train_test
from .registry import Experiment
from .runner import FigureRun

TRAIN_SIZES = (1000, 50000)  # Fig. 3
METHODS = ("aevb", "wake-sleep", "mcem")
LATENT_DIM, HIDDEN_UNITS = 3, 100  # Fig. 3


@dataclass
class MarginalLikelihoodProbe:
    """Appendix D estimates of log p(x) on the first ``points`` train and test points (picklable)."""

    points: int = 1000
    initial: str = "encoder"
    seed: int = 0

    def __call__(self, model, data) -> dict:
        device = next(model.parameters()).device
        values = {}
        for split in ("train", "test"):
            x = getattr(data, split)[: self.points].to(device)
            estimate, acceptance = hmc_log_likelihood(
                model, x, initial=self.initial, generator=torch.Generator().manual_seed(self.seed)
            )
            values[f"{split}_log_likelihood"] = estimate.mean
            values[f"{split}_log_likelihood_stderr"] = estimate.stderr
            values[f"{split}_hmc_acceptance"] = acceptance
        return values


#: MCEM's Adagrad step size: it has no bound to choose one by (§5's selection ranks by the bound).
DEFAULT_MCEM_STEP_SIZE = 0.01


def specs(
    budget: int,
    data_dir: str | None,
    train_sizes=TRAIN_SIZES,
    methods=METHODS,
    seed: int = 0,
    points: int = 1000,
    mcem_step_size: float = DEFAULT_MCEM_STEP_SIZE,
    evals_per_decade: int = 2,
) -> list[FigureRun]:
    runs = []
    for size in train_sizes:
        for method in methods:
            train = TrainConfig(
                max_samples=budget,
                seed=seed,
                evals_per_decade=evals_per_decade,
                step_size=mcem_step_size if method == "mcem" else None,
            )
            # Chains start at the encoder where one was trained; MCEM trains none.
            initial = "encoder" if trains_encoder(method) else "importance-resampled"
            probe = MarginalLikelihoodProbe(points, initial, seed)
            runs.append(
                FigureRun(
                    name=f"mnist-n{size}-{method}",
                    data=DataConfig("mnist", data_dir, train_limit=size),
                    model=ModelSpec(latent_dim=LATENT_DIM, hidden_units=HIDDEN_UNITS),
                    train=train,
                    algorithm=method,
                    track_test=False,
                    extra_metrics=probe,
                    tags={"train_size": size, "method": method},
                )
            )
    return runs


def write_outputs(run_specs: list[FigureRun], out: Path, budget: int) -> list[Path]:
    rows = [
        {
            **spec.tags,
            "samples": line["samples"],
            "train_log_likelihood": line["train_log_likelihood"],
            "test_log_likelihood": line["test_log_likelihood"],
            "seconds": line["seconds"],
        }
        for spec in run_specs
        for line in read_metrics(out / spec.name)
    ]
    csv_path = out / "fig3.csv"
    with open(csv_path, "w", newline="") as stream:
        writer = csv.DictWriter(
            stream,
            fieldnames=["train_size", "method", "samples", "train_log_likelihood", "test_log_likelihood", "seconds"],
        )
        writer.writeheader()
        writer.writerows(rows)
    final = {}
    for row in rows:  # rows are in order, so the last one per curve wins
        final[(row["train_size"], row["method"])] = row
    table_path = out / "fig3.json"
    table_path.write_text(json.dumps({"budget": budget, "final": list(final.values())}, indent=2) + "\n")

    sizes = sorted({spec.tags["train_size"] for spec in run_specs})
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for spec in run_specs:
            if spec.tags["train_size"] != size:
                continue
            plot_train_test(
                ax, read_metrics(out / spec.name), spec.tags["method"], "train_log_likelihood", "test_log_likelihood"
            )
        ax.set_xscale("log")
        # AEVB's and wake-sleep's first points (4 of 36 at 3e6) are the initial model, still in Adagrad's warm-up
        focus_y_axis(ax, lowest_share=0.2)
        ax.set_title(f"$N_{{train}} = {size}$", fontsize=10)
        ax.set_xlabel("# training samples evaluated")
        ax.set_ylabel("marginal log-likelihood (nats)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"Figure 3 reproduced\nAppendix D estimate, Nz = 3, {budget:.0e} samples per curve", fontsize=10)
    figure.tight_layout()
    path = out / "fig3.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return [path, csv_path, table_path]


EXPERIMENT = Experiment(
    "fig3",
    "marginal likelihood, AEVB vs wake-sleep vs MCEM",
    specs,
    write_outputs,
    options=("train_sizes", "methods", "points", "mcem_step_size"),
)
