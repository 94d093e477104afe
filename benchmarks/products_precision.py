"""What 16-bit matrix products give on this CPU: the products of one training step (the GEMM-only
bound's, ``benchmarks/peers/gemm_bound.py``) in float32, bfloat16 and float16, for each benchmark model.

This is the most a mixed-precision step could gain from the matrix units (bf16: AVX512-BF16 or AMX
tiles; fp16: AVX512-FP16): the products alone, on operands already in 16 bits, nothing else of the
step (a mixed step also casts weights and activations every step and keeps float32 everywhere
else). Rounds alternate the precisions; medians are reported, with the CPU's name and its vector
and matrix flags. ``speedup`` is bf16's over float32, ``float16_speedup`` fp16's.

With ``--profile P`` (a JSON of ``benchmarks/profile_step.py``), each model at the thread count
that ran most of its profiled steps also gets the most a whole step could gain (Amdahl's law): the products' share p of
the profiled step made s times faster and nothing else, 1 / ((1 − p) + p / s), casts free.

    python benchmarks/products_precision.py [--threads 1 2] [--rounds 5] [--profile P] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from bench import machine, write_json  # noqa: E402
from common import MODELS  # noqa: E402
from gemm_bound import rate, training_products  # noqa: E402


def most_used_threads(profiled: dict, default: int) -> int:
    """The thread count that ran most of a profiled model's steps (the trainer adapts it)."""
    counts = {int(threads): steps for threads, steps in profiled.get("steps_by_threads", {}).items()}
    return max(counts, key=counts.get) if counts else default


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--profile", type=Path, default=None, help="profile_step.py's JSON: the step ceilings")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = json.loads(args.profile.read_text()) if args.profile is not None else None
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, shape in MODELS.items():
            steps = {}
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                torch.set_default_dtype(dtype)
                try:
                    steps[dtype] = training_products(shape.batch_size, shape.hidden_units, shape)
                finally:
                    torch.set_default_dtype(torch.float32)
            rates = {dtype: [] for dtype in steps}
            for _ in range(args.rounds):
                for dtype, step in steps.items():
                    rates[dtype].append(rate(step, shape.batch_size, args.seconds))
            float32, bfloat16, float16 = (statistics.median(rates[dtype]) for dtype in steps)
            ratios = [b / f for f, b in zip(rates[torch.float32], rates[torch.bfloat16])]
            half_ratios = [h / f for f, h in zip(rates[torch.float32], rates[torch.float16])]
            result = {
                "model": name,
                "threads": threads,
                "float32_samples_per_second": float32,
                "bfloat16_samples_per_second": bfloat16,
                "float16_samples_per_second": float16,
                "speedup": statistics.median(ratios),
                "float16_speedup": statistics.median(half_ratios),
            }
            profiled = next((m for m in profile["models"] if m["model"] == name), None) if profile else None
            if profiled is not None and threads == most_used_threads(profiled, profile["threads"]):
                share = profiled["share"]["matrix products"]
                result["products_share"] = share
                result["step_ceiling"] = 1 / ((1 - share) + share / result["speedup"])
                result["float16_step_ceiling"] = 1 / ((1 - share) + share / result["float16_speedup"])
            results.append(result)
            ceiling = f", a whole step at most {result['step_ceiling']:.2f}x" if "step_ceiling" in result else ""
            print(
                f"{name:6s} {threads} threads: products of a step, float32 {float32:,.0f} samples/s, "
                f"bf16 {bfloat16:,.0f}, fp16 {float16:,.0f} samples/s, bf16 / float32 {statistics.median(ratios):.2f}, "
                f"fp16 / float32 {statistics.median(half_ratios):.2f}{ceiling}"
            )
    if args.json is not None:
        write_json(
            args.json,
            {"machine": machine(), "rounds": args.rounds, "profile": str(args.profile or ""), "results": results},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
