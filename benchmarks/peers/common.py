"""What every peer of the aevb benchmark shares: the model's shapes, the command line, the data
file and the JSON it prints.

Each peer is a script that runs in its own process (pythae's in its own virtual environment)
and times one implementation of the paper's MNIST model. It sets up, warms up, prints one JSON
line ``{"ready": true, "peer": ..., ...}`` and then serves the harness one measurement at a time:
for each line ``train`` or ``nll`` read on stdin it runs one repeat and prints
``{"measure": "train", "value": samples/s}`` (or decoder evaluations/s); ``quit`` ends it with
``{"peak_rss_mb": ...}``. The harness thereby interleaves the peers' repeats, so that a machine
whose speed drifts (shared cores) treats them all alike, and no repeat pays for a process start.

Only the standard library, numpy and torch are used here, so that any environment can run it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BenchModel:
    """A model timed by the benchmark: tanh MLPs of ``hidden_layers`` layers of ``hidden_units``
    each way, and how it is trained."""

    data_dim: int
    hidden_units: int
    latent_dim: int
    likelihood: str  # "bernoulli": binary data; "gaussian": real data, sigmoid mean (Frey Face)
    hidden_layers: int = 1
    optimizer: str = "adagrad"
    step_size: float = 0.02  # Adagrad: one of the paper's candidates (§5)
    batch_size: int = 100  # M (§5)


MODELS = {
    "mnist": BenchModel(784, 500, 20, "bernoulli"),  # the paper's (§5); sparse binary data
    "frey": BenchModel(560, 200, 20, "gaussian"),  # the paper's (§5); dense grey levels
    # Burda, Grosse & Salakhutdinov (2015): the model and optimiser of `aevb reproduce nll`
    "burda": BenchModel(784, 200, 50, "bernoulli", hidden_layers=2, optimizer="adam", step_size=1e-3, batch_size=20),
}
# The MNIST model's shapes, for peers that time it alone (pythae).
DATA_DIM, HIDDEN_UNITS, LATENT_DIM = MODELS["mnist"].data_dim, MODELS["mnist"].hidden_units, MODELS["mnist"].latent_dim
LEARNING_RATE = MODELS["mnist"].step_size


def parse_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data", required=True, help=".npy file: float32 (N, D) array (MNIST: values in {0, 1}; Frey Face: in [0, 1])"
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="mnist",
        help="mnist: 784-500-20, Bernoulli decoder; frey: 560-200-20, Gaussian decoder; "
        "burda: 784-200-200-50, Bernoulli decoder, Adam",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--train-samples", type=int, default=20000, help="samples per timed training repeat")
    parser.add_argument("--batch-size", type=int, default=None, help="training minibatch size M (default: the model's)")
    parser.add_argument("--hidden-units", type=int, default=None, help="hidden units per layer (default: the model's)")
    parser.add_argument(
        "--nll-points", type=int, default=100, help="datapoints (first rows of --data) for the likelihood estimate"
    )
    parser.add_argument("--nll-samples", type=int, default=1000, help="importance samples per datapoint")
    parser.add_argument(
        "--nll-batch-size",
        type=int,
        default=100,
        help="pythae's get_nll batch_size (importance samples decoded per pass)",
    )
    args = parser.parse_args(argv)
    args.shape = MODELS[args.model]
    if args.hidden_units is None:
        args.hidden_units = args.shape.hidden_units
    if args.batch_size is None:
        args.batch_size = args.shape.batch_size
    for name in (
        "threads",
        "train_samples",
        "batch_size",
        "hidden_units",
        "nll_points",
        "nll_samples",
        "nll_batch_size",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def load_data(path: str, min_rows: int = 1, data_dim: int = DATA_DIM) -> np.ndarray:
    data = np.load(path).astype(np.float32, copy=False)
    if data.ndim != 2 or data.shape[1] != data_dim:
        raise SystemExit(f"{path}: expected an (N, {data_dim}) array, got shape {data.shape}")
    if data.shape[0] < min_rows:
        raise SystemExit(f"{path}: {data.shape[0]} rows, fewer than the {min_rows} needed")
    return data


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def emit(message: dict, stream=None) -> None:
    """Print one JSON line to the harness."""
    stream = sys.stdout if stream is None else stream
    json.dump(message, stream)
    stream.write("\n")
    stream.flush()


def serve(info: dict, measurements: dict, args: argparse.Namespace, stream=None, commands=None) -> None:
    """Announce readiness with ``info``, then run ``measurements[name]()`` once per command line
    until ``quit`` or end of input. Each returns a rate, or (rate, details): a dict of what else
    the repeat saw, sent with the rate (aevb: the thread counts its steps ran at)."""
    stream = sys.stdout if stream is None else stream
    emit({"ready": True, "threads": args.threads, **info}, stream)
    for line in sys.stdin if commands is None else commands:
        name = line.strip()
        if name == "quit":
            break
        if name not in measurements:
            emit({"measure": name, "error": f"unknown measurement {name!r}"}, stream)
            continue
        result = measurements[name]()
        value, details = result if isinstance(result, tuple) else (result, {})
        emit({"measure": name, "value": value, **details}, stream)
    emit({"peak_rss_mb": peak_rss_mb()}, stream)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
