"""Peak memory of training on data held in memory and on the same data streamed from a memory-mapped
.npy file (aevb.data.sources.NpyDataset), at N rows and at 10 N rows.

Each measurement is a fresh process that trains the same small model for the same number of
samples. Memory is the process's peak anonymous resident memory (RssAnon of /proc/self/status,
sampled every 2 ms): the memory a process owns. The pages of a memory-mapped file that were read
count in its RSS as page cache, which the kernel drops under pressure, so the peak RSS (VmHWM) is
printed beside it but is not what "larger than memory" is about.

    python benchmarks/streaming_memory.py            # N = 20000 and 200000 rows of 784 uint8
    python benchmarks/streaming_memory.py --rows 5000 --samples 5000   # quicker

Writes benchmarks/results/streaming_memory_<date>.json and prints the ratios 10 N / N.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine_info import cpu_flags, cpu_name  # (beside this script: benchmarks/machine_info.py)

RESULTS = Path(__file__).resolve().parent / "results"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(mode: str, path: str, samples: int) -> None:
    """Train once and print a JSON line of this process's memory peaks (MiB) and time."""
    peak = {"anon": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["anon"] = max(peak["anon"], _status_kib("RssAnon"))
            time.sleep(0.002)

    import numpy as np
    import torch

    from aevb import ModelConfig, TrainConfig
    from aevb.data.sources import NpyDataset
    from aevb.models.build import build_model
    from aevb.training import Trainer

    torch.set_num_threads(1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    baseline = _status_kib("RssAnon")
    started = time.perf_counter()
    data = torch.from_numpy(np.load(path)) if mode == "in-memory" else NpyDataset(path)
    model = build_model(ModelConfig(data_dim=784, latent_dim=10, hidden_units=200))
    config = TrainConfig(max_samples=samples, step_size=0.02, evals_per_decade=1, first_eval=samples, eval_subset=1000)
    Trainer(model, data, config, threads=1).fit()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    mib = 1 / 1024
    print(
        json.dumps(
            {
                "peak_anon_mib": peak["anon"] * mib,
                "anon_before_data_mib": baseline * mib,
                "peak_rss_mib": _status_kib("VmHWM") * mib,
                "seconds": seconds,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="N, the smaller data set's rows (default 20000)")
    parser.add_argument("--samples", type=int, default=20_000, help="training samples per run (default 20000)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    import numpy as np

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        generator = np.random.default_rng(0)
        for rows in (args.rows, 10 * args.rows):
            path = Path(tmp) / f"rows-{rows}.npy"
            array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, 784))
            for start in range(0, rows, 10_000):  # (written in pieces: the writer holds no copy either)
                stop = min(rows, start + 10_000)
                array[start:stop] = generator.integers(0, 256, size=(stop - start, 784), dtype=np.uint8)
            array.flush()
            del array
            for mode in ("in-memory", "streamed"):
                env = os.environ | {"OMP_NUM_THREADS": "1"}
                command = [sys.executable, __file__, "--child", mode, str(path), str(args.samples)]
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                results.append({"mode": mode, "rows": rows, "file_mib": path.stat().st_size / 2**20, **measured})
                print(
                    f"{mode:9} {rows:>8} rows ({results[-1]['file_mib']:6.1f} MiB file): peak anonymous "
                    f"{measured['peak_anon_mib']:7.1f} MiB, peak RSS {measured['peak_rss_mib']:7.1f} MiB, "
                    f"{measured['seconds']:.1f} s"
                )
    ratios = {}
    for mode in ("in-memory", "streamed"):
        small, large = (r for r in results if r["mode"] == mode)
        ratios[mode] = large["peak_anon_mib"] / small["peak_anon_mib"]
        print(f"{mode}: peak anonymous memory at 10 N / at N = {ratios[mode]:.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"streaming_memory_{datetime.date.today().isoformat()}.json"
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python", "benchmarks/streaming_memory.py", *sys.argv[1:]]),
                "machine": cpu_name(),
                "cpu_flags": cpu_flags(),
                "samples": args.samples,
                "results": results,
                "ratio_10n_over_n": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
