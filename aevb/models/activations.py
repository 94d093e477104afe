"""The hidden layers' activations by name (``ModelConfig.activation``, ``--activation``).

A module of its own, below both :mod:`.config` (which checks a name) and :mod:`.networks` (which
builds the layer), so that neither imports the other for it.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,  # the paper's choice (App. C)
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}
