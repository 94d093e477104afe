"""The fast paths of evaluation (no gradients): importance sampling and the bound decode millions
of rows, and these paths do it in fewer passes over the decoder's output and fewer operations than
the references in :mod:`aevb.objectives.estimators` they are tested against
(``tests/test_fused.py``, ``tests/test_native.py``, ``tests/test_likelihood.py``):

* log p(x|z): the reference is :func:`aevb.objectives.estimators.decoder_log_likelihood`
  (``model.decode(z).log_prob(x)``); :func:`decoder_log_prob` chooses between it and
  :func:`fast_decoder_log_prob`, in one place, and evaluation hands it to the estimators as their
  ``log_likelihood``;
* the importance weights log p(x, z) − log q(z|x) of the Gaussian encoder and N(0, I) prior:
  :func:`aevb.objectives.estimators.log_importance_weights`; :func:`fast_importance_weights_apply`
  says where :func:`fast_importance_weights` serves.

They live with evaluation, not with the training engines whose kernels they share, so that the
objectives (§2.3, the reference) import neither the engines nor the C kernels.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from .. import native
from ..engines.activations import FUSED_ACTIVATIONS
from ..engines.fused import hidden_linears, unsupported_reason
from ..models.networks import bounded_log_variance
from ..models.vae import VAE
from ..native.bindings import ACTIVATION_CODES
from ..objectives.estimators import decoder_log_likelihood

LOG_2PI = math.log(2.0 * math.pi)


def fast_decoder_log_prob(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """log p(x|z) for evaluation (no gradients) of an :class:`aevb.models.vae.VAE`, or None when this
    fast path does not apply (gradients wanted, or not a plain MLP VAE).

    z: (..., M, J) with x: (M, D) → (..., M) nats; the same value as
    ``model.decode(z).log_prob(x)`` to float rounding, in fewer passes over the (…·M, D) output:
    tanh through the sigmoid kernel, the Bernoulli term as Σ_d x·l − softplus(l) with the first
    sum a batched matrix-vector product.
    """
    if torch.is_grad_enabled() or unsupported_reason(model, "B") is not None:
        return None
    return _decoder_log_prob_no_grad(model, z, x)


class _Scratch(threading.local):
    """Reusable output buffers for evaluation chunks of one shape: importance sampling decodes
    thousands of equal chunks, and fresh multi-megabyte tensors cost a page fault per 4 KiB.
    One set per thread (importance sampling decodes chunks on several, aevb.chunk_workers.ChunkWorkers),
    freed with the thread."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < math.prod(shape):
            buffer = torch.empty(math.prod(shape), dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[: math.prod(shape)].view(shape)


_SCRATCH = _Scratch()


@torch.no_grad()
def _decoder_log_prob_no_grad(model: VAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    config = model.config
    net = model.decoder.net
    activation = FUSED_ACTIVATIONS[config.activation]
    batch_shape = z.shape[:-1]
    h = z.reshape(-1, z.shape[-1])
    rows = h.shape[0]
    kernels = (
        native.load() if h.dtype == torch.float32 and h.device.type == "cpu" and x.dtype == torch.float32 else None
    )
    # The native kernels add each layer's bias themselves: a product without it writes its output
    # once instead of first filling it with the broadcast bias.
    native_bias = kernels is not None and activation.name in ACTIVATION_CODES
    for index, layer in enumerate(hidden_linears(net)):
        buffer = _SCRATCH.get(f"hidden{index % 2}", (rows, layer.weight.shape[0]), h)
        if native_bias and layer.bias is not None:
            h = kernels.bias_activation(torch.mm(h, layer.weight.t(), out=buffer), layer.bias, activation.name)
        else:
            h = activation.forward(torch.addmm(layer.bias, h, layer.weight.t(), out=buffer), buffer)
    points, data_dim = x.shape[-2], x.shape[-1]
    heads = net.heads
    out_buffer = _SCRATCH.get("out", (rows, heads.weight.shape[0]), h)
    if (
        config.likelihood == "bernoulli"
        and kernels is not None
        and x.dim() == 2
        and rows % points == 0
        and heads.bias is not None
    ):
        log_lik = torch.empty(rows, dtype=h.dtype, device=h.device)
        return kernels.bernoulli_log_lik(
            torch.mm(h, heads.weight.t(), out=out_buffer), x.contiguous(), rows // points, log_lik, bias=heads.bias
        ).view(batch_shape)
    out = torch.addmm(heads.bias, h, heads.weight.t(), out=out_buffer)
    out = out.view(-1, points, out.shape[-1])  # (S, M, outputs)
    if config.likelihood == "bernoulli":
        dot = torch.einsum("smd,md->sm", out, x)
        return (dot - _softplus_(out).sum(dim=-1)).view(batch_shape)
    bound = config.log_variance_bound
    if model.decoder.log_var is None:
        mean, log_var = out[..., :data_dim], bounded_log_variance(out[..., data_dim:], bound)
    else:
        mean, log_var = out, bounded_log_variance(model.decoder.log_var, bound).expand_as(out)
    if config.sigmoid_mean:
        mean = torch.sigmoid(mean)
    squared = (x - mean).square_().mul_(torch.exp(-log_var))
    return (-0.5 * (LOG_2PI * data_dim + log_var.sum(dim=-1) + squared.sum(dim=-1))).view(batch_shape)


def _softplus_(tensor: torch.Tensor) -> torch.Tensor:
    """softplus in place (F.softplus has no in-place form; its out= variant aliases safely)."""
    try:
        return torch._C._nn.softplus(tensor, 1.0, 20.0, out=tensor)
    except (AttributeError, RuntimeError, TypeError):
        return F.softplus(tensor)


def fast_importance_weights_apply(model: nn.Module) -> bool:
    """Whether :func:`fast_importance_weights` computes ``model``'s weights: an aevb VAE with the
    Gaussian encoder and the N(0, I) prior, and nothing needs gradients."""
    return not torch.is_grad_enabled() and unsupported_reason(model, "B") is None


@torch.no_grad()
def fast_importance_weights(
    model: VAE,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    num_samples: int,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for k = ``num_samples`` draws z = μ + σ ⊙ ε from
    the encoder's q(z|x) = N(μ, diag σ²) (mean, std: (M, J), computed once per datapoint by the
    caller), ε ~ N(0, I) or ``noise`` (k, M, J): (k, M), nats.

    With z = μ + σ ⊙ ε the latent terms need no density evaluations:
    log p(z) − log q(z|x) = ½ Σ_j ε_j² − ½ Σ_j z_j² + Σ_j log σ_j (the 2π terms cancel).
    """
    eps = torch.randn(num_samples, *mean.shape, dtype=mean.dtype, device=mean.device) if noise is None else noise
    z = torch.addcmul(mean, std, eps)
    latent = (eps.square().sum(dim=-1) - z.square().sum(dim=-1)).mul_(0.5).add_(std.log().sum(dim=-1))
    return _decoder_log_prob_no_grad(model, z, x).add_(latent)


def decoder_log_prob(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z), (L, M) for z (L, M, J) and x (M, D), nats: the reference
    :func:`~aevb.objectives.estimators.decoder_log_likelihood`, or the same number by
    :func:`fast_decoder_log_prob` where it applies (nothing needs the gradient, a plain MLP VAE;
    a conditional VAE is not one, so its rows reach its own ``decoder_log_prob``). The
    ``log_likelihood`` that evaluation gives the estimators."""
    fast = fast_decoder_log_prob(model, z, x)
    return decoder_log_likelihood(model, z, x) if fast is None else fast
