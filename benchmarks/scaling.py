"""How aevb's training throughput scales: with the minibatch size M, the hidden width, CPU threads
and processes — ``python benchmarks/scaling.py`` writes scaling/scaling.{png,json} (``--out docs/figures`` replaces
the committed figure).

Every point is aevb's fused training step on the embedded MNIST sample (binarised), timed through
:meth:`aevb.training.Trainer.fit` (median of ``--repeats``), next to the GEMM-only bound of the same
shapes (benchmarks/peers/gemm_bound.py). Widths are also given in GFLOP/s — 2 × the multiply-adds
of a step (forward, and backward except the input gradient of the first layer) per second — which
shows how the cost grows with the work: a flat line means cost proportional to the products.
Processes are ``torchrun`` runs of ``aevb train`` with the cores split among them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from bench import embedded_sample, machine  # noqa: E402
from common import MODELS  # noqa: E402
from gemm_bound import rate, training_flops, training_products  # noqa: E402

from aevb.models.vae import VAE, ModelConfig  # noqa: E402
from aevb.training import TrainConfig, Trainer  # noqa: E402

DATA_DIM, LATENT_DIM = 784, 20


def aevb_rate(data: torch.Tensor, batch: int, hidden: int, seconds: float, repeats: int) -> float:
    model = VAE(ModelConfig(data_dim=DATA_DIM, latent_dim=LATENT_DIM, hidden_units=hidden))
    probe = Trainer(
        model,
        data,
        TrainConfig(batch_size=batch, step_size=0.02, max_samples=20 * batch, first_eval=20 * batch, eval_subset=10),
    )
    warm = probe.fit().history[-1].samples_per_second  # warm-up, and a first guess of the speed
    samples = max(batch, int(warm * seconds) // batch * batch)
    trainer = Trainer(
        model,
        data,
        TrainConfig(batch_size=batch, step_size=0.02, max_samples=samples, first_eval=samples, eval_subset=10),
    )
    return statistics.median(trainer.fit().history[-1].samples_per_second for _ in range(repeats))


def bound_rate(batch: int, hidden: int, seconds: float) -> float:
    return rate(training_products(batch, hidden, MODELS["mnist"]), batch, seconds)


def process_rate(processes: int, threads: int, dataset: Path, samples: int, scratch: Path) -> float:
    out = scratch / f"p{processes}"
    command = ["--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    launcher = [sys.executable, "-m", "torch.distributed.run", *command] if processes > 1 else [sys.executable]
    args = [
        *launcher,
        "-m",
        "aevb.cli",
        "train",
        "--dataset",
        str(dataset),
        "--threads",
        str(threads),
        "--step-size",
        "0.02",
        "--max-samples",
        str(samples),
        "--eval-subset",
        "10",
        "--no-progress",
        "--out",
        str(out),
        "--overwrite",
    ]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads((out / "summary.json").read_text())["samples_per_second"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("scaling"), help="output directory (the committed figure: --out docs/figures)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per point (median)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 25, 50, 100, 200, 500, 1000])
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 100, 200, 500, 1000, 2000])
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    results: dict = {"cores": cores, "torch": torch.__version__, "machine": machine()}

    with tempfile.TemporaryDirectory(prefix="aevb-scaling-") as scratch:
        scratch = Path(scratch)
        npy = embedded_sample(scratch / "sample.npy")
        data = torch.from_numpy(np.load(npy))
        torch.set_num_threads(cores)

        results["batch_size"] = []
        for batch in args.batch_sizes:
            point = {
                "batch_size": batch,
                "aevb": aevb_rate(data, batch, 500, args.seconds, args.repeats),
                "gemm_bound": bound_rate(batch, 500, args.seconds),
            }
            results["batch_size"].append(point)
            print(f"M={batch}: {point}", file=sys.stderr, flush=True)

        results["width"] = []
        for hidden in args.widths:
            flops = training_flops(1, hidden, MODELS["mnist"])
            aevb, bound = (
                aevb_rate(data, 100, hidden, args.seconds, args.repeats),
                bound_rate(100, hidden, args.seconds),
            )
            point = {
                "hidden_units": hidden,
                "aevb": aevb,
                "gemm_bound": bound,
                "aevb_gflops": aevb * flops / 1e9,
                "gemm_bound_gflops": bound * flops / 1e9,
                "flops_per_sample": flops,
            }
            results["width"].append(point)
            print(f"H={hidden}: {point}", file=sys.stderr, flush=True)

        results["threads"] = []
        for threads in range(1, cores + 1):
            torch.set_num_threads(threads)
            point = {
                "threads": threads,
                "aevb": aevb_rate(data, 100, 500, args.seconds, args.repeats),
                "gemm_bound": bound_rate(100, 500, args.seconds),
            }
            results["threads"].append(point)
            print(f"threads={threads}: {point}", file=sys.stderr, flush=True)
        torch.set_num_threads(cores)

        results["processes"] = []
        dataset = scratch / "sample-train.npy"
        np.save(dataset, data.numpy())
        samples = int(results["threads"][-1]["aevb"] * args.seconds * 2) // 100 * 100
        for processes in sorted({1, 2, cores} & set(range(1, cores + 1))):
            values = [
                process_rate(processes, max(1, cores // processes), dataset, samples, scratch)
                for _ in range(args.repeats)
            ]
            point = {
                "processes": processes,
                "threads_per_process": max(1, cores // processes),
                "aevb": statistics.median(values),
            }
            results["processes"].append(point)
            print(f"processes={processes}: {point}", file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "scaling.png")
    print(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.png'}")
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def against_bound(ax, rows, x_key, aevb_key="aevb", bound_key="gemm_bound", **labels):
        xs = [r[x_key] for r in rows]
        ax.plot(xs, [r[aevb_key] for r in rows], "o-", label="aevb (fused)")
        ax.plot(xs, [r[bound_key] for r in rows], "k--", label="GEMM-only bound")
        ax.set(**labels)
        ax.legend()

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    against_bound(
        axes[0, 0],
        results["batch_size"],
        "batch_size",
        xscale="log",
        yscale="log",
        xlabel="minibatch size M",
        ylabel="training samples/s",
        title="784-500-20 against M",
    )
    rows = results["width"]
    against_bound(
        axes[0, 1],
        rows,
        "hidden_units",
        "aevb_gflops",
        "gemm_bound_gflops",
        xscale="log",
        xlabel="hidden units (encoder and decoder)",
        ylabel="GFLOP/s (samples/s annotated)",
        title="cost against width, M = 100",
    )
    for r in rows:
        axes[0, 1].annotate(
            f"{r['aevb']:,.0f}/s",
            (r["hidden_units"], r["aevb_gflops"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(0, -12),
            ha="center",
        )
    rows = results["threads"]
    against_bound(
        axes[1, 0],
        rows,
        "threads",
        xlabel="CPU threads (one process)",
        ylabel="training samples/s",
        title="threads, 784-500-20, M = 100",
        xticks=[r["threads"] for r in rows],
    )
    rows = results["processes"]
    ax = axes[1, 1]
    ax.bar([str(r["processes"]) for r in rows], [r["aevb"] for r in rows])
    ax.set(
        xlabel="processes (torchrun; cores split among them)",
        ylabel="training samples/s",
        title="processes, same global minibatch M = 100",
    )
    fig.suptitle(f"aevb training throughput, {results['cores']} CPU cores, torch {results['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
