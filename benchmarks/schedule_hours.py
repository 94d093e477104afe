"""How long ``aevb reproduce nll --budget 1`` takes per model, from a run of a fraction of it.

Runs ``aevb reproduce nll --budget FRACTION --models MODEL --points POINTS`` (default: 2% of each
model's published schedule, the test score on 1,000 of the 10,000 test images) for every model,
thread setting and checkout, one at a time, and scales what the run's own table records
(``nll_binarized_mnist.json``: ``training_seconds``, ``evaluation_seconds``) to the whole
protocol: training time ÷ FRACTION (the training's periodic bound evaluations included, at their
share of the fraction) plus the evaluation time × 10,000 ÷ POINTS (importance sampling with
k = 5000 costs the same per test image). Measured on a fraction and scaled, as such.

Thread settings: ``1`` runs ``--threads 1`` (alone on one core, as the long runs go);
``adaptive`` gives no ``--threads`` (the default: the thread count that trains fastest now, up to
the machine's cores). ``--checkout NAME=PATH`` (repeatable) times another version of aevb by
putting PATH first on ``PYTHONPATH``; the runs alternate between checkouts so that both see the
machine alike::

    python benchmarks/schedule_hours.py --data-dir ../shared/data \\
        --checkout before=/path/to/old/checkout --checkout after=. --json F
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

from bench import machine, write_json  # (beside this script: benchmarks/bench.py)

HERE = Path(__file__).resolve().parent
TEST_IMAGES = 10_000  # MNIST's test set, which the protocol scores


def one_run(checkout: Path, model: str, threads: str, fraction: float, points: int, data_dir: str) -> dict:
    """Runs the fraction of the protocol for one model; its row of the table, with the scaled hours."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "aevb", "reproduce", "nll", "--budget", str(fraction)]
        command += ["--models", model, "--points", str(points), "--data-dir", data_dir, "--out", out]
        command += ["--no-progress", "--jobs", "1"] + (["--threads", threads] if threads != "adaptive" else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]))
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=checkout)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"schedule_hours: {model} at {checkout}: {last}")
        (row,) = json.loads((Path(out) / "nll_binarized_mnist.json").read_text())["models"]
        summary = json.loads((Path(out) / model / "summary.json").read_text())
    training_hours = row["training_seconds"] / row["budget_fraction"] / 3600
    evaluation_hours = row["evaluation_seconds"] * TEST_IMAGES / row["num_points"] / 3600
    return {
        "model": model,
        "threads": threads,
        "budget_fraction": row["budget_fraction"],
        "budget_samples": row["budget_samples"],
        "training_seconds": row["training_seconds"],
        "samples_per_second": row["samples_per_second"],
        "evaluation_points": row["num_points"],
        "evaluation_seconds": row["evaluation_seconds"],
        "run_wall_seconds": wall,
        "threads_recorded": row["threads"],
        "steps_by_threads": summary.get("steps_by_threads"),  # what an adaptive count chose
        "full_training_hours": training_hours,
        "full_evaluation_hours": evaluation_hours,
        "full_schedule_hours": training_hours + evaluation_hours,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["iwae-vae", "iwae-k5"])
    parser.add_argument("--threads", nargs="+", default=["1", "adaptive"], help="1, 2, ... or adaptive")
    parser.add_argument("--fraction", type=float, default=0.02, help="share of the schedule to run (default: 2%%)")
    parser.add_argument("--points", type=int, default=1000, help="test images scored (scaled to all 10,000)")
    parser.add_argument("--data-dir", default=os.environ.get("AEVB_DATA_DIR"), help="MNIST's files")
    parser.add_argument(
        "--checkout", action="append", default=None, help="NAME=PATH of an aevb checkout (default: this one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must lie in (0, 1], got {args.fraction}")
    if not 1 <= args.points <= TEST_IMAGES:
        parser.error(f"--points must lie in 1..{TEST_IMAGES}, got {args.points}")
    if any(t != "adaptive" and not (t.isdigit() and int(t) >= 1) for t in args.threads):
        parser.error(f"--threads takes counts >= 1 or 'adaptive', got {' '.join(args.threads)}")
    if args.data_dir is None:
        parser.error("--data-dir (or AEVB_DATA_DIR) must name the folder with MNIST's files")
    checkouts = {}
    for item in args.checkout or [f"this={HERE.parent}"]:
        name, sep, path = item.partition("=")
        if not sep or not name or not (Path(path) / "aevb" / "__init__.py").is_file():
            parser.error(f"--checkout takes NAME=PATH of an aevb checkout, got {item!r}")
        checkouts[name] = Path(path).resolve()
    results, this_machine = [], machine()
    for threads in args.threads:
        for model in args.models:
            for name, path in checkouts.items():  # alternating: both versions see the machine alike
                started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                result = {"checkout": name, "started": started} | one_run(
                    path, model, threads, args.fraction, args.points, args.data_dir
                )
                results.append(result)
                print(
                    f"{name:<8} {model:<9} threads {threads:<8} {result['samples_per_second']:>8,.0f} samples/s: "
                    f"training {result['full_training_hours']:.2f} h + evaluation "
                    f"{result['full_evaluation_hours']:.2f} h = {result['full_schedule_hours']:.2f} h "
                    f"(steps by threads: {result['steps_by_threads']})",
                    flush=True,
                )
                if args.json is not None:  # after every run: a long measurement keeps what it has
                    document = {
                        "machine": this_machine,
                        "fraction": args.fraction,
                        "points": args.points,
                        "checkouts": {key: str(value) for key, value in checkouts.items()},
                        "runs": results,
                    }
                    write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
