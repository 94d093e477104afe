"""Where one training step of the paper's MNIST model spends its time, by kind of work.

Runs :class:`aevb.engines.native.NativeStep` with the optimiser inside (what ``aevb train`` does on a CPU)
on minibatches of the embedded MNIST sample, under cProfile (torch.profiler does not see the
native kernels, which are ctypes calls), and prints milliseconds per step for: the matrix
products (torch ``mm``/``addmm``), the sparse first-layer products, the Adagrad kernel, the other
native kernels, and everything else (Python, small torch operations, drawing ε). ``--no-native``
profiles the same step in torch operations with ``optimizer.step()`` after it.

    python benchmarks/profile_step.py [--steps 300] [--threads 2] [--no-native]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import embedded_sample  # noqa: E402

from aevb.engines.fused import FusedStep  # noqa: E402
from aevb.engines.native import NativeStep, native_unavailable_reason  # noqa: E402
from aevb.models.vae import VAE, ModelConfig  # noqa: E402
from aevb.training.optimizers import Adagrad, guarded_step, non_finite  # noqa: E402

CATEGORIES = {  # (file substring, function name) → category
    "products": [("", "<built-in method torch.mm>"), ("", "<built-in method torch.addmm>")],
    "sparse first layer": [
        ("native", "sparse_rows"),
        ("native", "sparse_linear"),
        ("native", "sparse_weight_gradient"),
    ],
    "Adagrad": [("native", "adagrad"), ("", "<built-in method torch._fused_adagrad_>")],
    "other native kernels": [
        ("native", name)
        for name in (
            "activation_forward",
            "activation_backward",
            "bernoulli",
            "latent_forward",
            "latent_backward",
            "abs_sum",
            "scale_rows",
        )
    ],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-native", action="store_true", help="the fused step in torch operations")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        data = torch.from_numpy(np.load(embedded_sample(Path(scratch) / "sample.npy")))
    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500))
    native = not args.no_native and native_unavailable_reason(torch.device("cpu"), torch.float32) is None
    step = (NativeStep if native else FusedStep)(model, "B", 1, 100)
    optimizer = Adagrad(model.parameters(), lr=0.02)
    order = torch.randperm(data.shape[0])

    def run(steps: int) -> None:
        for index in range(steps):
            rows = order[(index * 100) % (data.shape[0] - 100) :][:100]
            x = data.index_select(0, rows)
            if native:
                step(x, optimizer=optimizer)
            else:
                bound = step(x)
                guarded_step(optimizer, non_finite(step.parameters, bound, step.flat_gradient))

    run(30)
    profiler = cProfile.Profile()
    profiler.enable()
    run(args.steps)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(entry[2] for entry in stats.values())  # every function's own time
    per_step = {name: 0.0 for name in CATEGORIES}
    for (filename, _, function), entry in stats.items():
        for category, patterns in CATEGORIES.items():
            if any(part in filename and function == name for part, name in patterns):
                per_step[category] += entry[2]
                break
    print(
        f"{'native kernels' if native else 'torch operations'}, {args.threads} threads, {args.steps} steps: "
        f"{1e3 * total / args.steps:.2f} ms per step"
    )
    for category, seconds in per_step.items():
        print(f"  {category:22s} {1e3 * seconds / args.steps:6.2f} ms  {100 * seconds / total:5.1f}%")
    rest = total - sum(per_step.values())
    print(f"  {'everything else':22s} {1e3 * rest / args.steps:6.2f} ms  {100 * rest / total:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
