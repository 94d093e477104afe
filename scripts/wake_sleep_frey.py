"""Why wake-sleep stalls on Frey Face: wake-sleep runs under each initialisation and step size,
beside the bound of a decoder that ignores z.

    python scripts/wake_sleep_frey.py --data-dir DIR [--budget 1e6] [--jobs 2] [--out DIR]

A Gaussian decoder that ignores z fits each pixel's mean and variance; its log-likelihood (below:
``ignores_z``) is where a stalled wake-sleep run sits. Each run's row gives its final train and test
bound, and the number of training samples after which its training bound first exceeds that level
by 20 nats (``left_plateau_at``; null: never). Writes the rows as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from aevb.experiments.runner import FigureRun, read_summary, run_specs
from aevb.runs import DataConfig, ModelSpec, load_data
from aevb.runs.layout import read_metrics
from aevb.training import TrainConfig

ESCAPE_MARGIN = 20.0  # nats above the ignores-z level that count as having left it


def ignores_z_log_likelihood(train: torch.Tensor) -> float:
    """Mean log-likelihood (nats per face) of the best Gaussian with a mean and a variance per
    pixel and no dependence on z: −(D/2) log(2πe) − ½ Σ_d log var_d."""
    variance = train.double().var(0, unbiased=False)
    return float(-0.5 * train.shape[1] * math.log(2 * math.pi * math.e) - 0.5 * variance.log().sum())


#: aevb's settings before session 17 (torch's Adagrad, every parameter random, shuffled epochs, a
#: 200-minibatch selection), with which benchmarks/results/wake_sleep_frey.json was made
BEFORE_SESSION_17 = (
    {"init": "normal"},
    {"optimizer": "adagrad", "minibatches": "shuffled", "selection_steps": 200},
)


def grid(
    budget: int,
    data_dir: str | None,
    latent_dims,
    init_stds,
    step_sizes,
    before: bool = False,
    algorithm: str = "wake-sleep",
) -> list[FigureRun]:
    model_settings, train_settings = BEFORE_SESSION_17 if before else ({}, {})
    runs = []
    for latent_dim in latent_dims:
        for init_std in init_stds:
            for step_size in step_sizes:
                name = f"frey-z{latent_dim}-init{init_std:g}-step{step_size or 'chosen'}"
                name += "-unclipped" if algorithm == "wake-sleep-unclipped" else ""
                runs.append(
                    FigureRun(
                        name=name,
                        data=DataConfig("frey", data_dir),
                        model=ModelSpec(latent_dim=latent_dim, init_std=init_std, **model_settings),
                        train=TrainConfig(
                            max_samples=budget, step_size=step_size, evals_per_decade=4, **train_settings
                        ),
                        algorithm=algorithm,
                        tags=dict(latent_dim=latent_dim, init_std=init_std, step_size=step_size, algorithm=algorithm),
                    )
                )
    return runs


def summarise(spec: FigureRun, out: Path, plateau: float) -> dict:
    lines = read_metrics(out / spec.name)
    summary = read_summary(out / spec.name)
    escaped = next((line["samples"] for line in lines if line["train_bound"] > plateau + ESCAPE_MARGIN), None)
    return {
        **spec.tags,
        "chosen_step_size": summary["step_size"],
        "train_bound": summary["train_bound"],
        "test_bound": summary["test_bound"],
        "left_plateau_at": escaped,
        "curve": [(line["samples"], round(line["train_bound"], 2)) for line in lines],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--budget", type=float, default=1e6, help="training samples per run")
    parser.add_argument("--latent-dims", type=int, nargs="+", default=[2, 10, 20])
    parser.add_argument("--init-stds", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument(
        "--step-sizes", type=float, nargs="+", default=[0.0, 0.1], help="0: chosen from 0.01, 0.02, 0.1 as in §5"
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="reproduce/wake-sleep-frey")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument(
        "--before-session-17",
        action="store_true",
        help="aevb's settings before session 17 (torch's Adagrad, all parameters random, shuffled epochs, "
        "a 200-minibatch selection): the settings of benchmarks/results/wake_sleep_frey.json",
    )
    parser.add_argument(
        "--unclipped-dreams",
        action="store_true",
        help="leave the decoder's dreams as drawn instead of clipping them to [0, 1] as the authors' code "
        "does (algorithm wake-sleep-unclipped)",
    )
    args = parser.parse_args()

    out = Path(args.out)
    runs = grid(
        int(args.budget),
        args.data_dir,
        args.latent_dims,
        args.init_stds,
        [step or None for step in args.step_sizes],
        args.before_session_17,
        "wake-sleep-unclipped" if args.unclipped_dreams else "wake-sleep",
    )
    run_specs(runs, out, jobs=args.jobs)
    data = load_data(DataConfig("frey", args.data_dir))
    plateau = ignores_z_log_likelihood(data.train)
    rows = [summarise(spec, out, plateau) for spec in runs]
    print(f"a decoder that ignores z: {plateau:.2f} nats per face (training set)")
    print(f"{'Nz':>3} {'init σ':>7} {'step':>7} {'train':>9} {'test':>9}  left the plateau at")
    for row in rows:
        print(
            f"{row['latent_dim']:>3} {row['init_std']:>7g} {row['chosen_step_size']:>7g} {row['train_bound']:>9.2f} "
            f"{row['test_bound']:>9.2f}  {row['left_plateau_at'] or 'never'}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"budget": int(args.budget), "ignores_z": plateau, "runs": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
