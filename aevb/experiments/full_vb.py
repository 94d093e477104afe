"""Full VB (App. F) against MAP (§5) where overfitting shows: small training sets of Frey Face and MNIST.

For each data set and Ntrain, two runs with the same model, seed, minibatches and budget: MAP
(``--algorithm aevb``, weight decay = N(0, I) prior on every parameter) and full VB
(``--algorithm full-vb``, a Gaussian posterior over the decoder's parameters with the N(0, I)
prior as its KL term). Then, per run, in nats per datapoint:

* ``train_bound``: mean over the training set of the bound 𝓛(x) (L = 1 sample of z; full VB:
  E_q(θ)[𝓛_θ(x)] with ``parameter_draws`` draws of θ); full VB also ``train_full_bound`` =
  train_bound − KL(q(θ) ‖ p(θ))/N, the objective it maximises;
* ``test_bound``: the same on the test points (L = 10), a lower bound on (predictive) log p(x);
* ``test_log_likelihood``: importance-sampled log p(x) — MAP with k samples of z; full VB the
  predictive log E_q(θ)[p_θ(x)] with ``parameter_draws`` draws of θ × k/``parameter_draws``
  samples of z each (the same number of decoder evaluations), with its Monte Carlo standard
  error and (``_spread_stderr``) the standard deviation over test points / √(test points);
* ``minibatch_bound_at``: the running minibatch bound (full VB: the full bound) at the last
  evaluation points, to show whether training had levelled off.

Usage (writes the runs into OUT and the table as JSON)::

    python -m aevb.experiments.full_vb --data-dir ../shared/data --out runs/full-vb --json full_vb.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write_json
from ..errors import AevbError
from ..evaluation import evaluate_bound
from ..evaluation.full_vb import expected_bound, predictive_log_likelihood
from ..evaluation.importance_sampling import estimate_log_likelihood
from ..models.full_vb import FullVBVAE
from ..runs import DataConfig, ModelSpec, data_config_of_run, load_data, load_run
from ..runs.layout import read_metrics
from ..training import TrainConfig
from .runner import FigureRun, is_complete, read_summary, run_specs

#: (dataset, Nz, hidden units): Frey Face with the repo's defaults (Gaussian decoder, sigmoid mean,
#: 200 hidden units, §5); MNIST with a smaller hidden layer than §5's 500 to fit the time budget.
SETTINGS = {"frey": (5, 200), "mnist": (10, 200)}
TRAIN_SIZES = (100, 1000)
ALGORITHMS = ("aevb", "full-vb")
EVALUATION_FILE = "full_vb_evaluation.json"


def specs(
    data_dir: str | None, datasets=tuple(SETTINGS), train_sizes=TRAIN_SIZES, max_samples: int = 300_000, seed: int = 0
) -> list[FigureRun]:
    runs = []
    for dataset in datasets:
        latent_dim, hidden_units = SETTINGS[dataset]
        for size in train_sizes:
            for algorithm in ALGORITHMS:
                train = TrainConfig(
                    max_samples=max_samples,
                    seed=seed,
                    evals_per_decade=2,
                    eval_subset=500,
                    first_eval=max_samples // 10,
                )
                runs.append(
                    FigureRun(
                        name=f"{dataset}-n{size}-{algorithm}",
                        data=DataConfig(dataset, data_dir, train_limit=size),
                        model=ModelSpec(latent_dim=latent_dim, hidden_units=hidden_units),
                        train=train,
                        algorithm=algorithm,
                        track_test=False,
                        tags=dict(dataset=dataset, train_size=size, algorithm=algorithm),
                    )
                )
    return runs


def evaluate(run_dir: Path, test_points: int, k: int, parameter_draws: int, seed: int = 0) -> dict:
    """The numbers of one run (see the module docstring); cached in ``run_dir``."""
    cached = run_dir / EVALUATION_FILE
    if cached.is_file():
        return json.loads(cached.read_text())
    model, config = load_run(run_dir, device="cpu")
    data = load_data(data_config_of_run(config["data"]))
    train, test = data.train, data.test[:test_points]
    torch.manual_seed(seed)
    started = time.perf_counter()
    result = {
        "run": run_dir.name,
        "algorithm": config["algorithm"],
        "dataset": data.name,
        "train_size": train.shape[0],
        "test_points": test.shape[0],
        "latent_dim": model.config.latent_dim,
        "hidden_units": model.config.hidden_units,
        "samples": read_summary(run_dir)["samples"],
        "step_size": read_summary(run_dir)["step_size"],
    }
    if isinstance(model, FullVBVAE):
        kl = model.decoder_parameter_kl(config["training"]["prior_precision"]).item()
        result["train_bound"] = expected_bound(model, train, 1, parameter_draws).mean
        result["train_full_bound"] = result["train_bound"] - kl / train.shape[0]
        result["decoder_parameter_kl_per_datapoint"] = kl / train.shape[0]
        result["test_bound"] = expected_bound(model, test, 10, parameter_draws).mean
        with model.decoder_parameters(model.mean_decoder_parameters()):  # plug-in θ = μ_θ, for reference
            result["test_bound_at_posterior_mean"] = evaluate_bound(model, test, num_samples=10).mean
        estimate = predictive_log_likelihood(
            model, test, num_samples=k // parameter_draws, parameter_draws=parameter_draws
        )
        result["parameter_draws"] = parameter_draws
    else:
        result["train_bound"] = evaluate_bound(model, train, num_samples=1).mean
        result["test_bound"] = evaluate_bound(model, test, num_samples=10).mean
        estimate = estimate_log_likelihood(model, test, num_samples=k)
    result.update(
        test_log_likelihood=estimate.mean,
        test_log_likelihood_stderr=estimate.stderr,
        test_log_likelihood_spread_stderr=estimate.spread_stderr,
        importance_samples=estimate.num_samples,
        seconds=time.perf_counter() - started,
    )
    # Still climbing? The minibatch bound (full VB: the full bound) at the last evaluation points.
    result["minibatch_bound_at"] = {line["samples"]: line["minibatch_bound"] for line in read_metrics(run_dir)[-3:]}
    atomic_write_json(cached, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/full-vb")
    parser.add_argument("--json", default=None, help="write the table here (default: OUT/full_vb.json)")
    parser.add_argument("--datasets", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--train-sizes", nargs="+", type=int, default=list(TRAIN_SIZES))
    parser.add_argument("--max-samples", type=float, default=300_000)
    parser.add_argument("--test-points", type=int, default=500)
    parser.add_argument("--k", type=int, default=1000, help="decoder evaluations per test point for log p(x)")
    parser.add_argument("--parameter-draws", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    runs = specs(args.data_dir, args.datasets, args.train_sizes, int(args.max_samples), args.seed)
    started = time.perf_counter()
    try:
        run_specs(runs, out, jobs=args.jobs, device="cpu")
    except AevbError as error:  # one line, as the CLI says it; finished runs stay in OUT
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = []
    for spec in runs:
        assert is_complete(out / spec.name)
        rows.append(evaluate(out / spec.name, args.test_points, args.k, args.parameter_draws, args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    target = Path(args.json) if args.json else out / "full_vb.json"
    atomic_write_json(
        target,
        {
            "command": " ".join(["python -m aevb.experiments.full_vb", *(argv or sys.argv[1:])]),
            "seconds": time.perf_counter() - started,
            "rows": rows,
        },
    )
    print(format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    lines = [
        "| data | Ntrain | method | train bound | full bound | test bound | test log p(x) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        full = f"{row['train_full_bound']:.1f}" if "train_full_bound" in row else ""
        lines.append(
            f"| {row['dataset']} | {row['train_size']} | {'full VB' if row['algorithm'] == 'full-vb' else 'MAP'} "
            f"| {row['train_bound']:.1f} | {full} | {row['test_bound']:.1f} "
            f"| {row['test_log_likelihood']:.1f} ± {row['test_log_likelihood_stderr']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
