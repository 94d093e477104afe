"""The checks that need a GPU, in one run of at most about 8 minutes (``benchmarks/gpu_check.sh``):

1. the tests that touch CUDA (``tests/test_cuda.py``);
2. training throughput of the paper's MNIST model (784-500-20, M = 100) on CUDA with the engine
   ``auto`` chooses and with autograd, and importance-sampled log p(x) throughput (k = 1000);
3. training throughput of ``aevb reproduce nll``'s runs of Burda et al.'s model (VAE, IWAE k = 5
   and k = 50, minibatches of 20; ``benchmarks/protocol_speed.py``) and the hours their full
   schedules (1.97×10⁸ samples each) would take at that speed;
4. one Figure 2 panel, MNIST Nz = 20, AEVB for 10⁷ training samples (``aevb reproduce fig2``).

Everything goes into one JSON file (``--out``). Without a CUDA device it says so in one line and
exits with status 2, having run nothing. The MNIST files are read from ``--data-dir`` (default
``$AEVB_DATA_DIR``, else ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import embedded_sample  # noqa: E402


def run_tests() -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return {
        "returncode": done.returncode,
        "summary": (done.stdout.strip().splitlines() or [""])[-1],
        "seconds": time.perf_counter() - started,
    }


def train_throughput(data: torch.Tensor, engine: str, samples: int = 200_000) -> dict:
    from aevb import VAE, ModelConfig, TrainConfig, Trainer

    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500)).cuda()
    config = TrainConfig(step_size=0.02, max_samples=samples, first_eval=samples, eval_subset=100, engine=engine)
    trainer = Trainer(model, data, config)
    trainer.fit()  # warm-up: kernels, allocator
    rates = [trainer.fit().history[-1].samples_per_second for _ in range(3)]
    return {"engine": trainer.algorithm.engine_used, "samples_per_second": sorted(rates)[1], "all": rates}


def likelihood_throughput(data: torch.Tensor, points: int = 1000, k: int = 1000) -> dict:
    from aevb import VAE, ModelConfig
    from aevb.evaluation.importance_sampling import estimate_log_likelihood

    model = VAE(ModelConfig(data_dim=784, latent_dim=20, hidden_units=500)).cuda()
    estimate_log_likelihood(model, data[:10], num_samples=k)
    torch.cuda.synchronize()
    started = time.perf_counter()
    estimate = estimate_log_likelihood(model, data[:points], num_samples=k)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "points": points,
        "k": k,
        "decoder_evaluations_per_second": points * k / seconds,
        "mean_log_likelihood": estimate.mean,
    }


def protocol_throughput(data_dir: Path, samples: int = 40_000, device: str = "cuda") -> dict:
    """Samples/s of the nll protocol's runs on ``device``, and the hours of each full schedule."""
    from protocol_speed import one_repeat

    from aevb.errors import AevbError
    from aevb.experiments.nll import MODELS

    try:
        one_repeat("iwae-vae", 100, 1, "mnist", str(data_dir), device)
        dataset = "mnist"
    except AevbError:  # MNIST's files not found: the embedded sample (it trains a little faster)
        dataset = "mnist-sample"
    results = {"dataset": dataset, "samples": samples}
    for name in ("iwae-vae", "iwae-k5", "iwae-k50"):
        rate = one_repeat(name, samples, 1, dataset, str(data_dir), device)
        results[name] = {"samples_per_second": rate, "full_schedule_hours": MODELS[name].full_samples / rate / 3600}
    return results


def figure_2_panel(data_dir: Path, out: Path, budget: int) -> dict:
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "aevb",
        "reproduce",
        "fig2",
        "--datasets",
        "mnist",
        "--latent-dims",
        "20",
        "--methods",
        "aevb",
        "--budget",
        str(budget),
        "--device",
        "cuda",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    result = {
        "returncode": done.returncode,
        "seconds": time.perf_counter() - started,
        "stderr_tail": done.stderr[-1500:],
    }
    summary = out / "mnist-z20-aevb" / "summary.json"
    if summary.exists():
        result["summary"] = json.loads(summary.read_text())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON of results")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("AEVB_DATA_DIR") or ROOT.parent / "shared" / "data")
    )
    parser.add_argument("--budget", type=int, default=10**7, help="training samples of the Figure 2 panel")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}); nothing was run", file=sys.stderr)
        return 2
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results["tests"] = run_tests()
    with tempfile.TemporaryDirectory() as scratch:
        images = np.load(embedded_sample(Path(scratch) / "sample.npy"))
    data = torch.from_numpy(images).cuda()
    results["train"] = [train_throughput(data, engine) for engine in ("auto", "autograd")]
    results["log_likelihood"] = likelihood_throughput(data)
    results["protocol"] = protocol_throughput(args.data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        results["figure_2_panel"] = figure_2_panel(args.data_dir, Path(scratch) / "fig2", args.budget)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    hours = ", ".join(
        f"{name} {results['protocol'][name]['full_schedule_hours']:.1f} h"
        for name in ("iwae-vae", "iwae-k5", "iwae-k50")
    )
    print(
        f"gpu_check: wrote {args.out}: tests {results['tests']['summary']!r}; training "
        f"{results['train'][0]['samples_per_second']:,.0f} samples/s ({results['train'][0]['engine']}); "
        f"full nll schedules: {hours}"
    )
    ok = results["tests"]["returncode"] == 0 and results["figure_2_panel"]["returncode"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
