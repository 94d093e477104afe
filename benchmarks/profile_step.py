"""Where one training step goes, by kind of work, on the benchmark's three models.

Trains each model as ``aevb train`` and ``benchmarks/bench.py`` do (:meth:`aevb.training.Trainer.fit`,
default engine: on a CPU the native kernels with the update inside the step) and reports, per
step, the wall time of an unprofiled run and, from a cProfile run of the same length, the time
of each kind of work:

* matrix products: torch's ``mm``/``addmm`` (the dense products);
* sparse first layer: the first layer's products over the nonzeros of mostly-zero data (MNIST);
* activations: the hidden layers' tanh, its derivative and the bias gradients' column sums;
* likelihood and KL: log p(x|z) and its gradient, the latent layer (μ, σ, z, KL or log p(z) − log q)
  forwards and backwards, IWAE's weights;
* optimiser: the update (Adagrad, Adam);
* copies and draws: the minibatch's rows, ε, dynamic binarisation's uniforms, contiguous copies;
* Python and the rest: the unprofiled step's wall time less all of the above (the trainer's loop,
  the engine's Python, ctypes argument passing, the thread policy, small torch operations).

Beside each profile, the step's products alone (``peers/gemm_bound.py``, the GEMM-only bound of
``bench.py``) at the same thread count, timed right after the profile, and their GFLOP/s:
``ratio_to_bound`` is the bound's step time over aevb's, and ``ceiling_without_python`` the same
ratio were "Python and the rest" gone, with every other part as measured. A ceiling below a target says that no trimming of the step's Python
reaches it: the kernels or the products themselves must get faster.

Importance sampling (``--nll``, the Bernoulli models): one chunk of ``bench.py``'s size
(100 points × 100 draws) on one thread, as each of the evaluation's workers decodes it — the whole
chunk (:func:`aevb.evaluation.decoding.fast_importance_weights`), its products alone and the native
kernels that must follow them (the hidden layers' bias and tanh, the Bernoulli log-likelihood);
``ceiling`` = products ÷ (products + those kernels), the most that any fusion of the rest reaches;
and, since bench.py's bound runs a chunk's products on ``--threads`` intra-op threads while the
evaluation runs that many one-thread workers, ``ceiling_against_bound`` = ceiling × threads ÷ the
products' speed-up on those threads: the most the evaluation can reach of bench.py's bound
were the workers as fast together as each alone. They share the machine's caches and memory,
so the products are also timed on ``--threads`` one-thread streams at once (``streams_speedup``
over one stream alone), and ``ceiling_with_shared_machine`` = ceiling × that ÷ the products'
speed-up on intra-op threads.

The native kernels are ctypes calls, which torch.profiler does not see; cProfile charges each to
its Python entry point in ``aevb/native/bindings.py``, argument conversion included. cProfile's
own cost per call is left out of "Python and the rest" by taking that share from the unprofiled
run. ``--json`` writes the table with the machine's CPU.

    python benchmarks/profile_step.py [--models mnist,frey,burda] [--samples 200000] [--threads 2] [--engine E] [--nll] [--json F]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from aevb_peer import model_and_config  # noqa: E402
from bench import embedded_sample, frey_training_data, machine, write_json  # noqa: E402
from common import MODELS  # noqa: E402
from gemm_bound import decoder_products, rate, training_flops, training_products  # noqa: E402

from aevb.engines import ENGINE_CHOICES  # noqa: E402
from aevb.training import Trainer  # noqa: E402

#: kind of work → (a substring of the file, the function's name) of the calls that do it
CATEGORIES = {
    "matrix products": [("", f"<built-in method torch.{name}>") for name in ("mm", "addmm", "bmm", "matmul")]
    + [("", f"<method '{name}' of 'torch._C.TensorBase' objects>") for name in ("mm", "addmm")],
    "sparse first layer": [("native", name) for name in ("sparse_rows", "sparse_linear", "sparse_weight_gradient")],
    "activations": [("native", name) for name in ("activation_forward", "activation_backward", "bias_activation")],
    "likelihood and KL": [
        ("native", name) for name in ("bernoulli", "gaussian", "latent_forward", "latent_backward", "scale_rows")
    ]
    + [("", f"<built-in method torch.{name}>") for name in ("logsumexp", "softmax")],
    "optimiser": [("native", "adagrad"), ("native", "adam")]
    + [("", f"<built-in method torch._fused_{name}_>") for name in ("adagrad", "adam")],
    "numeric guard": [("native", "abs_sum")],
    "copies and draws": [("", f"<built-in method torch.{name}>") for name in ("index_select", "rand", "empty")]
    + [("", f"<method '{name}' of 'torch._C.TensorBase' objects>") for name in ("normal_", "contiguous", "to", "copy_")]
    + [("", "<method '__lt__' of 'torch._C.TensorBase' objects>")],
}


def profile(name: str, data: torch.Tensor, samples: int, engine: str = "auto") -> dict:
    """Per-step milliseconds by kind of work (``CATEGORIES``, then "Python and the rest")."""
    torch.manual_seed(0)
    model, config = model_and_config(MODELS[name], samples, engine)
    trainer = Trainer(model, data, config)
    trainer.fit()  # warm-up: the kernels' first calls, the thread policy's probe
    steps = samples / config.batch_size
    timed = trainer.fit()
    wall = config.batch_size / timed.history[-1].samples_per_second
    profiler = cProfile.Profile()
    profiler.enable()
    trainer.fit()
    profiler.disable()
    per_step = dict.fromkeys(CATEGORIES, 0.0)
    for (filename, _, function), entry in pstats.Stats(profiler).stats.items():
        for category, patterns in CATEGORIES.items():
            if any(part in filename and function == pattern for part, pattern in patterns):
                per_step[category] += entry[2] / steps  # the function's own time
                break
    per_step["Python and the rest"] = max(0.0, wall - sum(per_step.values()))
    shape, hidden = MODELS[name], model.config.hidden_units
    bound = config.batch_size / rate(training_products(config.batch_size, hidden, shape), config.batch_size)
    return {
        "model": name,
        "batch_size": config.batch_size,
        "engine": trainer.algorithm.engine_used,
        "step_ms": 1e3 * wall,
        "samples_per_second": config.batch_size / wall,
        "steps_by_threads": timed.steps_by_threads,  # what the adaptive thread count chose
        "ms": {category: 1e3 * seconds for category, seconds in per_step.items()},
        "share": {category: seconds / wall for category, seconds in per_step.items()},
        "gemm_bound_step_ms": 1e3 * bound,
        "gemm_bound_gflops": training_flops(config.batch_size, hidden, shape) / bound / 1e9,
        "ratio_to_bound": bound / wall,
        "ceiling_without_python": bound / (wall - per_step["Python and the rest"]),
    }


def importance_sampling_parts(name: str, threads: int, points: int = 100, draws: int = 100) -> dict:
    """Milliseconds of one importance-sampling chunk on one thread, as a worker decodes it: whole,
    its products alone, and the kernels between and after them alone; the ceiling they leave; and
    the products on ``threads`` intra-op threads, as bench.py's bound runs them, against which
    ``threads`` workers of one thread each reach at most ``ceiling_against_bound``."""
    from aevb import native
    from aevb.evaluation.decoding import fast_importance_weights

    shape = MODELS[name]
    model, _ = model_and_config(shape, 100)
    x = (torch.rand(points, shape.data_dim) < 0.2).float()
    with torch.no_grad():
        posterior = model.encode(x)
        mean, std = posterior.mean, posterior.stddev
    rows, hidden = points * draws, model.config.hidden_units
    whole = rate(lambda: fast_importance_weights(model, x, mean, std, draws), 1)
    chunk_products = decoder_products(rows, hidden, shape)
    products = rate(chunk_products, 1)
    kernels = native.load()
    hidden_out = torch.randn(rows, hidden)
    logits, bias, log_lik = torch.randn(rows, shape.data_dim), torch.zeros(shape.data_dim), torch.empty(rows)
    bias_hidden = torch.zeros(hidden)

    def between_products():
        for _ in range(shape.hidden_layers):
            kernels.bias_activation(hidden_out, bias_hidden, "tanh")
        kernels.bernoulli_log_lik(logits, x, draws, log_lik, bias=bias)

    between = rate(between_products, 1)
    torch.set_num_threads(threads)
    try:
        speedup = rate(chunk_products, 1) / products  # the chunk's products on `threads` threads
    finally:
        torch.set_num_threads(1)
    streams = concurrent_rate(lambda: decoder_products(rows, hidden, shape), threads) / products
    ceiling = (1 / products) / (1 / products + 1 / between)
    return {
        "model": name,
        "rows": rows,
        "chunk_ms": 1e3 / whole,
        "products_ms": 1e3 / products,
        "kernels_ms": 1e3 / between,
        "ratio_to_bound": whole / products,
        "ceiling": ceiling,
        "threads": threads,
        "products_speedup": speedup,
        "ceiling_against_bound": ceiling * threads / speedup,
        "streams_speedup": streams,
        "ceiling_with_shared_machine": ceiling * streams / speedup,
    }


def concurrent_rate(make_work, streams: int, seconds: float = 2.0) -> float:
    """Calls per second of ``streams`` copies of ``make_work()``'s work (each made in its own
    thread), each on one intra-op thread and all at once, as the evaluation's workers run their
    chunks: what the machine gives ``streams`` one-thread streams together."""
    counts, ready, done = [0] * streams, threading.Barrier(streams + 1), threading.Event()

    def stream(index: int) -> None:
        torch.set_num_threads(1)
        work = make_work()
        for _ in range(3):
            work()
        ready.wait()
        while not done.is_set():
            work()
            counts[index] += 1

    threads = [threading.Thread(target=stream, args=(index,)) for index in range(streams)]
    for thread in threads:
        thread.start()
    ready.wait()  # every stream made and warmed up
    started = time.perf_counter()
    time.sleep(seconds)
    done.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,frey,burda", help="comma-separated: mnist, frey, burda")
    parser.add_argument("--samples", type=int, default=200_000, help="training samples per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the trainer adapts within them)")
    parser.add_argument(
        "--engine", choices=ENGINE_CHOICES, default="auto", help="the trainer's engine (fused: torch operations)"
    )
    parser.add_argument(
        "--nll", action="store_true", help="also time an importance-sampling chunk of mnist and burda, one thread"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not models or any(name not in MODELS for name in models):
        parser.error(f"--models takes a comma-separated list of {', '.join(MODELS)}, got {args.models!r}")
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in models:
            if name == "frey":
                path, why = frey_training_data(Path(scratch) / "frey.npy")
                if path is None:
                    print(f"profile_step: Frey Face left out: {why}", file=sys.stderr)
                    continue
            else:
                path = embedded_sample(Path(scratch) / "mnist.npy")
            data = torch.from_numpy(np.load(path))
            result = profile(name, data, args.samples, args.engine)
            results.append(result)
            print(
                f"{name} (M = {result['batch_size']}), {result['engine']}, {args.threads} threads: "
                f"{result['step_ms']:.3f} ms per step, "
                f"{result['samples_per_second']:,.0f} samples/s (steps by threads: {result['steps_by_threads']})"
            )
            for category, ms in result["ms"].items():
                print(f"  {category:22s} {ms:7.3f} ms  {100 * result['share'][category]:5.1f}%")
            print(
                f"  products alone (GEMM-only bound): {result['gemm_bound_step_ms']:.3f} ms, "
                f"{result['gemm_bound_gflops']:.0f} GFLOP/s; "
                f"aevb / bound {result['ratio_to_bound']:.2f}, without Python {result['ceiling_without_python']:.2f}"
            )
    importance = []
    if args.nll:
        torch.set_num_threads(1)  # each of the evaluation's workers decodes its chunks on one thread
        for name in [name for name in models if MODELS[name].likelihood == "bernoulli"]:
            parts = importance_sampling_parts(name, args.threads)
            importance.append(parts)
            print(
                f"importance sampling, {name}, {parts['rows']:,} rows, 1 thread: chunk {parts['chunk_ms']:.2f} ms, "
                f"products alone {parts['products_ms']:.2f} ms, kernels alone {parts['kernels_ms']:.2f} ms; "
                f"products / chunk {parts['ratio_to_bound']:.2f}, ceiling {parts['ceiling']:.2f}; the products "
                f"{parts['products_speedup']:.2f}x faster on {args.threads} threads: {args.threads} workers reach at "
                f"most {parts['ceiling_against_bound']:.2f} of that bound; {args.threads} one-thread streams of "
                f"products together {parts['streams_speedup']:.2f}x one: at most "
                f"{parts['ceiling_with_shared_machine']:.2f} with the machine shared"
            )
    if args.json is not None:
        write_json(
            args.json,
            {
                "machine": machine(),
                "threads": args.threads,
                "samples": args.samples,
                "models": results,
                "importance_sampling": importance,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
