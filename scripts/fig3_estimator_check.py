"""Check Figure 3's estimator on finished runs: the Appendix D estimate of log p(x) beside
importance sampling from the prior, which needs no encoder and, in Figure 3's three latent
dimensions, is a usable reference (a lower bound in expectation that rises with k).

    python scripts/fig3_estimator_check.py reproduce/fig3/mnist-n1000-* [--points 200] [--k 100000]
        [--starts encoder importance-resampled prior] [--json results.json]

For each run and split (the first ``--points`` points): App. D from each chain start asked for
(``auto``, the default, is what Figure 3 uses: the encoder where the run trained one, else prior
draws resampled by p(x|z)), and prior importance sampling with its Monte Carlo error. Nats per
datapoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aevb.evaluation.hmc_estimator import CHAIN_STARTS, hmc_log_likelihood
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.runs import load_run
from aevb.runs.data_config import data_config_of_run, load_data
from aevb.runs.layout import algorithm_of
from aevb.training import TrainConfig, evaluation_data
from aevb.training.algorithms import trains_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--k", type=int, default=100_000, help="prior importance samples per point")
    parser.add_argument("--starts", nargs="+", default=["auto"], choices=("auto", *CHAIN_STARTS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for run in args.runs:
        model, config = load_run(run, "cpu")
        where = str(run / "config.json")
        train_config = TrainConfig.from_dict(config["training"], where)
        data = load_data(data_config_of_run(config["data"], args.data_dir, where))
        trained = trains_encoder(algorithm_of(config, where))
        results[run.name] = {}
        for split in ("train", "test"):
            x = evaluation_data(getattr(data, split), train_config.binarize)[: args.points]
            row = {}
            for start in dict.fromkeys(args.starts):
                chosen = ("encoder" if trained else "importance-resampled") if start == "auto" else start
                estimate, _ = hmc_log_likelihood(model, x, initial=chosen, generator=torch.Generator().manual_seed(0))
                row[f"appendix_d_{chosen}"] = estimate.mean
            torch.manual_seed(0)
            prior = estimate_log_likelihood(model, x, num_samples=args.k, prior_mixture=1.0)
            row.update(
                prior_importance_sampling=prior.mean,
                prior_importance_sampling_stderr=prior.stderr,
                k=args.k,
                points=x.shape[0],
            )
            results[run.name][split] = row
            print(
                f"{run.name} {split}: "
                + ", ".join(f"{name} {value:.2f}" for name, value in row.items() if name.startswith("appendix_d"))
                + f", prior IS (k = {args.k:,}) {prior.mean:.2f} ± {prior.stderr:.3f}",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
