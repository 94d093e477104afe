"""The GEMM-only bound: the matrix products of one training step (or of one importance-sampling
chunk) of one of the benchmark's models (the paper's MNIST and Frey Face models, the latter's decoder with
two output heads; Burda et al.'s two-layer one), timed with nothing else — no activations, no loss, no
optimiser, no allocation (outputs are preallocated).

A training step of an MLP VAE with one hidden layer does eleven products, the same in any
implementation: four forward ``addmm`` (encoder hidden, encoder heads, decoder hidden, decoder
output, with the layouts nn.Linear uses), and backward, for each layer the weight gradient and,
except for the encoder's first layer (whose input is data), the input gradient; with two hidden
layers each way (``--model burda``), seventeen. No implementation that does these products can
be faster, so aevb's speed over this is the share of the step it spends on anything but them.

The importance-sampling bound is the decoder's products per decoded z, in chunks of
``--nll-batch-size`` × 100 rows (the encoder runs once per datapoint, negligible at large k).
"""

from __future__ import annotations

import time

import torch
from common import BenchModel, parse_args, serve


def layer_shapes(hidden: int, shape: BenchModel) -> list[tuple[int, int]]:
    """(in, out) features of every linear layer, encoder then decoder."""
    heads = 2 if shape.likelihood == "gaussian" else 1  # mean and log-variance, or logits
    between = [(hidden, hidden)] * (shape.hidden_layers - 1)
    return [
        (shape.data_dim, hidden),
        *between,
        (hidden, 2 * shape.latent_dim),
        (shape.latent_dim, hidden),
        *between,
        (hidden, heads * shape.data_dim),
    ]


def training_flops(batch: int, hidden: int, shape: BenchModel) -> int:
    """Floating-point operations of one step's products (a multiply-add counts two): per layer the
    forward product and the weight gradient, and the input gradient for all but the first layer."""
    per_product = [2 * batch * in_f * out_f for in_f, out_f in layer_shapes(hidden, shape)]
    return 2 * sum(per_product) + sum(per_product[1:])


def training_products(batch: int, hidden: int, shape: BenchModel):
    """Closures doing one step's products, on preallocated operands and outputs."""
    shapes = layer_shapes(hidden, shape)
    weights = [torch.randn(out_f, in_f) * 0.01 for in_f, out_f in shapes]
    biases = [torch.zeros(out_f) for _, out_f in shapes]
    inputs = [torch.rand(batch, in_f) for in_f, _ in shapes]
    outputs = [torch.empty(batch, out_f) for _, out_f in shapes]
    grads_out = [torch.randn(batch, out_f) for _, out_f in shapes]
    grads_w = [torch.empty_like(w) for w in weights]
    grads_in = [torch.empty(batch, in_f) for in_f, _ in shapes]

    def step():
        for w, b, x, out in zip(weights, biases, inputs, outputs):
            torch.addmm(b, x, w.t(), out=out)
        for layer in reversed(range(len(weights))):
            torch.mm(grads_out[layer].t(), inputs[layer], out=grads_w[layer])
            if layer > 0:
                torch.mm(grads_out[layer], weights[layer], out=grads_in[layer])

    return step


def decoder_products(rows: int, hidden: int, shape: BenchModel):
    out_dim = (2 if shape.likelihood == "gaussian" else 1) * shape.data_dim
    widths = [shape.latent_dim] + [hidden] * shape.hidden_layers + [out_dim]
    weights = [torch.randn(out_f, in_f) for in_f, out_f in zip(widths, widths[1:])]
    biases = [torch.zeros(out_f) for out_f in widths[1:]]
    activations = [torch.randn(rows, widths[0])] + [torch.empty(rows, out_f) for out_f in widths[1:]]

    def chunk():
        for layer, (w, b) in enumerate(zip(weights, biases)):
            torch.addmm(b, activations[layer], w.t(), out=activations[layer + 1])

    return chunk


def rate(work, units: int, seconds: float = 2.0) -> float:
    """units per second of ``work``, over about ``seconds`` after a warm-up."""
    for _ in range(10):
        work()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        work()
        calls += 1
    return calls * units / elapsed


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(args.threads)
    step = training_products(args.batch_size, args.hidden_units, args.shape)
    rows = args.nll_batch_size * 100
    chunk = decoder_products(rows, args.hidden_units, args.shape)
    serve(
        {"peer": "GEMM-only bound", "version": torch.__version__},
        {"train": lambda: rate(step, args.batch_size), "nll": lambda: rate(chunk, rows)},
        args,
    )


if __name__ == "__main__":
    main()
