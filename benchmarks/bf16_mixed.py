"""A bf16-mixed training step against float32: its speed and what it does to the bound.

bf16-mixed as Lightning's ``precision="bf16-mixed"`` has it: float32 weights, optimiser state and
bound; the step's matrix products (and the operations torch's CPU autocast lists with them) in
bfloat16 under ``torch.autocast("cpu", dtype=torch.bfloat16)``, on the autograd engine (aevb's
fused and native steps compute in float32 and do not see autocast). Each model is trained from the
same seed three ways — float32 on aevb's default engine, float32 on the autograd engine (to tell
the engine's share from the precision's), and bf16-mixed — and each trained model is scored in
float32 (the training and test bound, one z per point, nats per datapoint).

Models (``--models``): the paper's MNIST Nz = 20 (784-500-20, Adagrad 0.02, M = 100, grey levels
k/256 as the authors'), Frey Face Nz = 20 (560-200-20, Gaussian decoder, sigmoid mean, Adagrad
0.02), and Burda et al.'s VAE (784-200-200-50, Adam 1e-3, M = 20, MNIST dynamically binarised).

    python benchmarks/bf16_mixed.py --data-dir ../shared/data --samples 1e6 [--models mnist,frey,burda] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from aevb_peer import model_and_config  # noqa: E402
from bench import BENCH_MODELS, machine, write_json  # noqa: E402

from aevb.data import load_dataset  # noqa: E402
from aevb.evaluation.bound import evaluate_bound  # noqa: E402
from aevb.training import Trainer  # noqa: E402

#: model (``benchmarks/peers/common.py``'s shapes and optimisers) → (its dataset, settings on top)
DATASETS = {
    "mnist": ("mnist", {}),
    "frey": ("frey", {}),
    "burda": ("mnist", {"binarize": "dynamic"}),
}
WAYS = {  # name → (engine, autocast to bf16)
    "float32": ("auto", False),
    "float32-autograd": ("autograd", False),
    "bf16-mixed": ("autograd", True),
}


def train(name: str, way: str, samples: int, dataset, seed: int) -> dict:
    engine, bf16 = WAYS[way]
    torch.manual_seed(seed)
    model, config = model_and_config(BENCH_MODELS[name], samples, engine)
    config = dataclasses.replace(config, seed=seed, **DATASETS[name][1])
    trainer = Trainer(model, dataset.train, config)
    if bf16:  # autocast around the step only: the trainer's evaluations stay float32
        float32_step = trainer.algorithm.step

        def bf16_mixed_step(*args, **kwargs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return float32_step(*args, **kwargs)

        trainer.algorithm.step = bf16_mixed_step
    began = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - began
    model.eval()
    scores = {}
    for split, data in (("train", dataset.train), ("test", dataset.test)):
        estimate = evaluate_bound(model, data[:10_000])
        scores[f"{split}_bound"], scores[f"{split}_bound_stderr"] = estimate.mean, estimate.stderr
    return {
        "model": name,
        "way": way,
        "engine": trainer.algorithm.engine_used,
        "samples": samples,
        "samples_per_second": result.history[-1].samples_per_second,
        "seconds": seconds,
        **scores,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--samples", type=float, default=1e6)
    parser.add_argument("--models", default="mnist,frey,burda")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated: {', '.join(WAYS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    models = [name for name in args.models.split(",") if name]
    ways = [way for way in args.ways.split(",") if way]
    if not models or any(name not in DATASETS for name in models) or any(way not in WAYS for way in ways):
        parser.error(f"--models: {', '.join(DATASETS)}; --ways: {', '.join(WAYS)}")
    torch.set_num_threads(args.threads)
    results = []
    for name in models:
        dataset = load_dataset(DATASETS[name][0], args.data_dir)
        for way in ways:
            result = train(name, way, int(args.samples), dataset, args.seed)
            results.append(result)
            print(
                f"{name:6s} {way:17s} {result['samples_per_second']:9,.0f} samples/s  "
                f"train {result['train_bound']:9.2f}  test {result['test_bound']:9.2f} ± {result['test_bound_stderr']:.2f}",
                flush=True,
            )
            if args.json is not None:  # after every run: a long measurement keeps what it has
                write_json(
                    args.json, {"machine": machine(), "threads": args.threads, "seed": args.seed, "results": results}
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
