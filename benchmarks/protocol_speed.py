"""How fast ``aevb reproduce nll`` trains each of its models here, per run: samples/s of
:meth:`aevb.training.Trainer.fit` with the protocol's settings (:data:`aevb.experiments.nll.MODELS`:
architecture, optimiser, schedule, minibatch size, dynamic binarisation), on MNIST's 60,000
training images (``--data-dir`` or ``AEVB_DATA_DIR``; ``--dataset mnist-sample`` takes the
embedded sample's 10,000, which trains faster: a smaller array to draw minibatches from), with the
thread count the long runs use (``--threads``, default 1).

Each model is timed in ``--rounds`` fresh processes (this script runs itself once per repeat), so
that two versions of aevb can be compared by alternating them on one machine::

    python benchmarks/protocol_speed.py --models iwae-vae iwae-k5
    PYTHONPATH=/path/to/other/checkout python benchmarks/protocol_speed.py --models iwae-vae

It prints one line per repeat and the median per model, and with ``--json`` writes them.
Time the schedule left with it: samples to go ÷ samples/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from machine_info import cpu_flags, cpu_name  # (beside this script: benchmarks/machine_info.py)


def one_repeat(
    model_name: str,
    samples: int,
    threads: int,
    dataset: str = "mnist",
    data_dir: str | None = None,
    device: str = "cpu",
) -> float:
    """Samples/s of one training of ``samples`` samples on ``device`` (the evaluation at the end
    not counted)."""
    import torch

    from aevb.data.datasets import load_dataset
    from aevb.experiments.nll import IWAE_PIXEL_DIVISOR, MODELS
    from aevb.models.build import build_model
    from aevb.models.config import ModelConfig
    from aevb.training import TrainConfig, Trainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    protocol = MODELS[model_name]
    splits = load_dataset(dataset, data_dir, pixel_divisor=IWAE_PIXEL_DIVISOR)
    # the protocol trains on training and validation images together (merge_valid)
    images = (splits.train if splits.valid is None else torch.cat([splits.train, splits.valid])).to(device)
    model = build_model(ModelConfig(data_dim=images.shape[1], **protocol.model_options)).to(device)
    config = TrainConfig(
        **(
            dict(max_samples=samples, binarize="dynamic", evals_per_decade=1, first_eval=samples, eval_subset=10)
            | protocol.train_options
        )
    )
    Trainer(model, images, config, threads=threads).fit()  # warm-up: kernels built, caches filled
    return Trainer(model, images, config, threads=threads).fit().history[-1].samples_per_second


def main(argv=None) -> int:
    from aevb.experiments.nll import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["iwae-vae", "iwae-k5"], choices=sorted(MODELS))
    parser.add_argument("--samples", type=int, default=60_000, help="training samples per repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the long runs use 1)")
    parser.add_argument("--rounds", type=int, default=3, help="repeats per model, each in a fresh process")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "mnist-sample"])
    parser.add_argument("--data-dir", default=None, help="folder with MNIST's files (default: AEVB_DATA_DIR)")
    parser.add_argument("--device", default="cpu", help="torch device to train on (default: cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", default=None, help=argparse.SUPPRESS)  # one repeat, in this process
    args = parser.parse_args(argv)
    if min(args.samples, args.threads, args.rounds) < 1:
        parser.error("--samples, --threads and --rounds must be at least 1")
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: {args.device!r} is not a torch device")
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"protocol_speed: no CUDA device here (torch {torch.__version__})", file=sys.stderr)
        return 2
    if args.repeat is not None:
        from aevb.errors import AevbError

        try:
            rate = one_repeat(args.repeat, args.samples, args.threads, args.dataset, args.data_dir, args.device)
        except AevbError as error:
            print(f"protocol_speed: {error}", file=sys.stderr)
            return 2
        print(json.dumps({"samples_per_second": rate}))
        return 0
    rates: dict[str, list[float]] = {name: [] for name in args.models}
    for round_index in range(args.rounds):
        for name in args.models:
            command = [
                sys.executable,
                __file__,
                "--repeat",
                name,
                "--samples",
                str(args.samples),
                "--threads",
                str(args.threads),
                "--dataset",
                args.dataset,
                "--device",
                args.device,
            ]
            done = subprocess.run(
                command + (["--data-dir", args.data_dir] if args.data_dir else []), capture_output=True, text=True
            )
            if done.returncode != 0:
                last = done.stderr.strip().splitlines()[-1:] or ["no message"]
                print(
                    last[0] if last[0].startswith("protocol_speed:") else f"protocol_speed: {name}: {last[0]}",
                    file=sys.stderr,
                )
                return 1
            rate = json.loads(done.stdout.strip().splitlines()[-1])["samples_per_second"]
            rates[name].append(rate)
            print(f"round {round_index + 1}/{args.rounds} {name:<10} {rate:>9,.0f} samples/s", flush=True)
    summary = {
        name: {
            "median": statistics.median(values),
            "values": values,
            # the whole published schedule at this speed, training only (evaluation not included)
            "full_schedule_hours": MODELS[name].full_samples / statistics.median(values) / 3600,
        }
        for name, values in rates.items()
    }
    for name, entry in summary.items():
        print(
            f"{name:<10} median {entry['median']:>9,.0f} samples/s "
            f"[{min(entry['values']):,.0f}-{max(entry['values']):,.0f}], {args.threads} thread(s); "
            f"the full schedule in {entry['full_schedule_hours']:.1f} h"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {"cpu": cpu_name(), "cpu_flags": cpu_flags()},
                    "samples": args.samples,
                    "threads": args.threads,
                    "dataset": args.dataset,
                    "device": args.device,
                    "models": summary,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
