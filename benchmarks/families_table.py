"""Train and evaluate every approximate-posterior family of §2.4 on real data (one short run
each) and write OUT/families.json: see :mod:`aevb.experiments.families`.

    OMP_NUM_THREADS=1 python benchmarks/families_table.py --data-dir ../shared/data --out families-table
"""

from __future__ import annotations

import argparse

import torch

from aevb.experiments.families import families_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="families-table")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--posteriors", nargs="+", default=None, help="default: every family")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--hidden-units", type=int, default=200)
    parser.add_argument("--max-samples", type=float, default=2e5)
    parser.add_argument("--samples", type=int, default=100, help="samples of z per point for the test bound")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per point for log p(x)")
    parser.add_argument("--num-points", type=int, default=500, help="first test points evaluated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    families_table(
        args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        posteriors=args.posteriors,
        latent_dim=args.latent_dim,
        hidden_units=args.hidden_units,
        max_samples=int(args.max_samples),
        bound_samples=args.samples,
        log_likelihood_samples=args.k,
        num_points=args.num_points,
    )


if __name__ == "__main__":
    main()
