"""A result on real data for every approximate-posterior family of §2.4.

Each posterior family trains the same VAE briefly (the paper's MNIST settings but a smaller
model by default: Nz = 10, 200 hidden units) with a prior on its support — the Gaussian prior for
real-line families (Student-t for the Cauchy posterior, which has no finite KL to a Gaussian),
the family's own standard prior for the others where it has one, else the exponential prior
(positive support) — and the estimator the CLI would pick (B where KL(q ‖ p) has a closed form,
else A). Then the test bound (L samples per point, the training estimator) and the
importance-sampled log p(x) (k samples) are measured on the first test points, with the encoder
as the proposal and with the defensive mixture ½q + ½p (:data:`DEFENSIVE_MIXTURE`): where q's
support is narrower than the prior's (uniform, triangular, reciprocal, Pareto) the encoder alone
cannot propose the z outside it, and its estimate is then only a lower bound on log p(x).

    python benchmarks/families_table.py --data-dir ../shared/data --out families-table
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..models.families import FAMILIES, check_pair, default_estimator
from ..runs import SUMMARY_FILE, DataConfig, ModelSpec, RunOptions, RunSpec, evaluate_run, train_run
from ..training import TrainConfig

#: α of the defensive proposal (1 − α) q + α p that every family is also scored with.
DEFENSIVE_MIXTURE = 0.5


def table_prior(posterior: str) -> str:
    """The prior the table pairs with ``posterior``: see the module docstring."""
    family = FAMILIES[posterior]
    if family.support == "real":
        return "student-t" if posterior == "cauchy" else "gaussian"
    if family.prior_builder is not None and family.support_as_prior == family.support:
        return posterior
    return {"positive": "exponential"}[family.support]


def families_table(
    out: str | Path,
    *,
    dataset: str = "mnist",
    data_dir: str | None = None,
    posteriors: list[str] | None = None,
    latent_dim: int = 10,
    hidden_units: int = 200,
    max_samples: int = 200_000,
    bound_samples: int = 100,
    log_likelihood_samples: int = 1000,
    num_points: int = 500,
    seed: int = 0,
    log=lambda text: print(text, file=sys.stderr, flush=True),
) -> list[dict]:
    """Train and evaluate one run per posterior family into ``out/<posterior>-<prior>/``; write
    ``out/families.json`` (one row per family: bound and log p(x) in nats per datapoint) and return
    the rows. Complete runs are evaluated again but not retrained."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset": dataset,
        "latent_dim": latent_dim,
        "hidden_units": hidden_units,
        "defensive_mixture": DEFENSIVE_MIXTURE,
        "max_samples": max_samples,
        "bound_samples": bound_samples,
        "log_likelihood_samples": log_likelihood_samples,
        "num_points": num_points,
        "seed": seed,
    }
    rows = []
    for posterior in posteriors or list(FAMILIES):
        prior = table_prior(posterior)
        check_pair(posterior, prior)
        estimator = default_estimator(posterior, prior)
        run_dir = out / f"{posterior}-{prior}"
        started = time.perf_counter()
        if not (run_dir / SUMMARY_FILE).is_file():
            model = ModelSpec(latent_dim=latent_dim, hidden_units=hidden_units, posterior=posterior, prior=prior)
            training = TrainConfig(
                estimator=estimator, max_samples=max_samples, seed=seed, evals_per_decade=2, eval_subset=1000
            )
            spec = RunSpec(DataConfig(dataset, data_dir), model, training, run=RunOptions(device="cpu", progress=False))
            train_run(spec, run_dir, overwrite=True, command=f"aevb families-table ({posterior}/{prior})")
        row = {
            "posterior": posterior,
            "prior": prior,
            "route": FAMILIES[posterior].route,
            "support": FAMILIES[posterior].support,
            "estimator": estimator,
        }
        row |= _measured(run_dir, num_points, bound_samples, log_likelihood_samples, seed)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        log(
            f"{posterior:>25} / {prior:<12} {estimator}  bound {row['test_bound']:9.2f}  "
            f"log p(x) {row['log_likelihood']:9.2f} ± {row['log_likelihood_stderr']:.2f}, with ½q + ½p "
            f"{row['log_likelihood_defensive']:9.2f}  ({row['seconds']:.0f} s)"
        )
        (out / "families.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    return rows


def _measured(run_dir: Path, num_points: int, bound_samples: int, log_likelihood_samples: int, seed: int) -> dict:
    """A family's numbers (nats per datapoint): the test bound and log p(x) with the encoder as
    proposal and with the defensive mixture ½q + ½p, and what its training reached."""
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    common = dict(num_points=num_points, device="cpu", log_likelihood_samples=log_likelihood_samples, seed=seed)
    result = evaluate_run(run_dir, num_samples=bound_samples, **common)
    mixed = evaluate_run(run_dir, num_samples=1, prior_mixture=DEFENSIVE_MIXTURE, **common)
    return {
        "test_bound": result["test_bound"],
        "test_bound_stderr": result["test_bound_stderr"],
        "log_likelihood": result["log_likelihood"],
        "log_likelihood_stderr": result["log_likelihood_stderr"],
        "log_likelihood_defensive": mixed["log_likelihood"],
        "log_likelihood_defensive_stderr": mixed["log_likelihood_stderr"],
        "train_bound": summary["train_bound"],
        "step_size": summary["step_size"],
        "samples": summary["samples"],
        "training_seconds": summary["training_seconds"],
    }
