"""Every log p(x) estimator of aevb beside the exact value, on factor analysis expressed as a VAE.

    python scripts/factor_analysis_estimators.py [--points 500] [--perturbation 0.1] [--seed 0] [--json FILE]

Prints, for each estimator, the dataset mean (nats per datapoint), its reported standard error,
its error against the exact log p(x) and the wall time; ``--json`` also writes them to FILE
(``exact`` and one row per estimator, keyed by ``estimator``). A larger ``--perturbation`` makes
the encoder a poorer proposal: the defensive mixture ½q + ½p (``prior_mixture=0.5``) is the row
that shows what that costs plain importance sampling.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from aevb.evaluation.hmc_estimator import hmc_log_likelihood
from aevb.evaluation.importance_sampling import estimate_log_likelihood
from aevb.models.factor_analysis import exact_log_likelihood, marginal, random_factor_analysis_vae
from aevb.objectives.estimators import iwae_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--data-dim", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--perturbation", type=float, default=0.1, help="noise on the encoder's mean weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = random_factor_analysis_vae(
        args.data_dim, args.latent_dim, seed=args.seed + 1, encoder_perturbation=args.perturbation
    )
    x = marginal(model).sample((args.points,))
    exact = exact_log_likelihood(model, x).mean().item()
    print(
        f"factor analysis D = {args.data_dim}, J = {args.latent_dim}, {args.points} points; "
        f"exact log p(x) = {exact:.4f} nats per datapoint\n"
    )
    print(f"{'estimator':<38} {'estimate':>10} {'stderr':>8} {'error':>9} {'seconds':>8}")
    rows = []

    def row(name, value, stderr, seconds, **details):
        stderr_text = f"{stderr:8.4f}" if stderr == stderr else f"{'-':>8}"
        print(f"{name:<38} {value:10.4f} {stderr_text} {value - exact:+9.4f} {seconds:8.2f}")
        stderr = None if math.isnan(stderr) else stderr
        rows.append(
            {
                "estimator": name,
                **details,
                "estimate": value,
                "stderr": stderr,
                "error": value - exact,
                "seconds": seconds,
            }
        )

    for k in (1, 10, 100, 1000, 5000):
        estimate = estimate_log_likelihood(model, x, num_samples=k)
        row(f"importance sampling, k = {k}", estimate.mean, estimate.stderr, estimate.seconds, k=k)
    estimate = estimate_log_likelihood(model, x, num_samples=5000, prior_mixture=0.5)
    row("importance sampling, k = 5000, ½q + ½p", estimate.mean, estimate.stderr, estimate.seconds, k=5000)
    for samples in (50, 400):
        generator = torch.Generator().manual_seed(args.seed)
        estimate, acceptance = hmc_log_likelihood(model, x, num_samples=samples, generator=generator)
        name = f"HMC, App. D, L = {samples}"
        print(f"({name}: acceptance {acceptance:.2f})")
        row(name, estimate.mean, estimate.stderr, estimate.seconds, samples=samples, acceptance=acceptance)
    for k in (1, 10, 100, 1000):
        started = time.perf_counter()
        with torch.no_grad():
            draws = torch.stack([iwae_bound(model, x, k).mean() for _ in range(10)])
        row(
            f"IWAE bound, k = {k} (10 draws)",
            draws.mean().item(),
            (draws.std() / 10**0.5).item(),
            time.perf_counter() - started,
            k=k,
        )
    if args.json is not None:
        settings = {key: getattr(args, key) for key in ("points", "data_dim", "latent_dim", "perturbation", "seed")}
        args.json.write_text(json.dumps({"settings": settings, "exact": exact, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
