"""The hand-derived engines' activations: forward into a preallocated buffer, and the derivative
from pre-activation a and output h multiplied into the incoming gradient in place.

The reference is the ``nn.Module`` of :data:`aevb.models.networks.ACTIVATIONS` and its autograd
derivative; ``tests/test_engines.py`` checks every entry here against it. An activation of the
model that has no entry here simply trains with autograd (the fused engines say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def _tanh(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    # tanh(a) = 2 sigmoid(2a) − 1: torch's CPU sigmoid kernel is faster than its tanh kernel
    # (docs/performance.md); the absolute difference is at float rounding (~1e-7).
    torch.mul(a, 2.0, out=out)
    return torch.sigmoid(out, out=out).mul_(2.0).sub_(1.0)


def _tanh_grad(grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> None:
    grad.addcmul_(grad, h * h, value=-1.0)  # grad · (1 − h²)


def _relu(a, out):
    return torch.clamp(a, min=0.0, out=out)


def _relu_grad(grad, a, h):
    grad.mul_(a > 0)


def _sigmoid(a, out):
    return torch.sigmoid(a, out=out)


def _sigmoid_grad(grad, a, h):
    grad.mul_(h * (1.0 - h))


def _softplus(a, out):
    out.copy_(F.softplus(a))
    return out


def _softplus_grad(grad, a, h):
    grad.mul_(torch.sigmoid(a))


def _elu(a, out):
    out.copy_(F.elu(a))
    return out


def _elu_grad(grad, a, h):
    grad.mul_(torch.where(a > 0, 1.0, h + 1.0))  # d/da (eᵃ − 1) = h + 1 below zero


@dataclass(frozen=True)
class FusedActivation:
    """``forward(a, out)`` → out = f(a); ``backward(grad, a, h)``: grad ← grad · f′(a), h = f(a)."""

    name: str
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


#: Keyed like :data:`aevb.models.networks.ACTIVATIONS`.
FUSED_ACTIVATIONS: dict[str, FusedActivation] = {
    "tanh": FusedActivation("tanh", _tanh, _tanh_grad),
    "relu": FusedActivation("relu", _relu, _relu_grad),
    "sigmoid": FusedActivation("sigmoid", _sigmoid, _sigmoid_grad),
    "softplus": FusedActivation("softplus", _softplus, _softplus_grad),
    "elu": FusedActivation("elu", _elu, _elu_grad),
}
