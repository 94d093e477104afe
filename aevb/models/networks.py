"""Convolutional network bodies for image data (the paper's future work (i): "deeper neural
networks (e.g. convolutional networks) ... for the encoder and decoder", §6).

Each network here is a drop-in replacement for :class:`aevb.models.vae.MLP`: a body ``hidden`` that
turns the input into features, and ``heads`` that map the features to the outputs, returned as a
tuple of (..., features) tensors split like ``head_features``. The encoder and decoder classes of
:mod:`aevb.models.vae` (and the distributions they build from the heads) do not change, so every
estimator, importance-sampled log-likelihood and run-directory function works unchanged: inputs
and outputs stay flat, (..., D) pixels, and any leading sample dimensions (L, M, ...) are
flattened into one batch dimension for the convolutions and restored afterwards.

* :class:`ConvEncoderNet`: image (C, H, W) → Conv2d(k=3, stride 2, padding 1) per entry of
  ``channels`` → flatten → optional dense hidden layers → one Linear for all heads. Extra input
  columns after the D pixels (a conditional VAE's one-hot label) join the flattened features.
* :class:`ConvDecoderNet`: input → dense hidden layers → Linear to the smallest feature map →
  ConvTranspose2d(k=3, stride 2) per entry of ``channels`` in reverse; the last one outputs C
  channels per head (logits; or mean and log σ²), each a full (C, H, W) image flattened to (..., D).

C is the images' channels (1 for grey, 3 for RGB; :mod:`aevb.image_shape`), D = C·H·W, the pixels
of a row in torch's channels-first order, so that a grey model is the same network as before
colour existed and its saved weights load unchanged.

Every stride-2 convolution maps a side of n pixels to ⌈n/2⌉; its transposed partner maps ⌈n/2⌉
back to exactly n (``output_padding`` 1 for even n, 0 for odd), so any image shape works (MNIST
28×28 → 14×14 → 7×7; Frey Face 28×20 → 14×10 → 7×5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import threads  # noqa: F401  (sets MKL's strict reproducible mode before a network's first product)
from ..image_shape import image_channels, image_size
from .activations import ACTIVATIONS
from .config import ModelConfig

KERNEL, STRIDE, PADDING = 3, 2, 1


def feature_map_shapes(image_shape: tuple[int, ...], layers: int) -> list[tuple[int, int]]:
    """Spatial shapes after 0, 1, ..., ``layers`` stride-2 convolutions of images (H, W) or
    (C, H, W): [(H, W), (⌈H/2⌉, ⌈W/2⌉), ...]."""
    shapes = [image_size(image_shape)]
    for _ in range(layers):
        height, width = shapes[-1]
        shapes.append((math.ceil(height / 2), math.ceil(width / 2)))
    return shapes


def _dense_stack(in_features: int, widths: tuple[int, ...], activation: type[nn.Module]) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), activation()]
        in_features = width
    return layers, in_features


class _EncoderBody(nn.Module):
    """(..., D + C) → (..., F): the D pixels through the convolutions, the C extra columns
    appended to the flattened feature maps, then the dense layers."""

    def __init__(self, image_shape, channels, extra_features, widths, activation):
        super().__init__()
        self.image_shape = (image_channels(image_shape), *image_size(image_shape))  # (C, H, W)
        self.pixels = math.prod(self.image_shape)
        convolutions: list[nn.Module] = []
        previous = self.image_shape[0]
        for count in channels:
            convolutions += [nn.Conv2d(previous, count, KERNEL, STRIDE, PADDING), activation()]
            previous = count
        self.convolutions = nn.Sequential(*convolutions)
        height, width = feature_map_shapes(self.image_shape, len(channels))[-1]
        dense, self.out_features = _dense_stack(previous * height * width + extra_features, widths, activation)
        self.dense = nn.Sequential(*dense)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        leading = inputs.shape[:-1]
        flat = inputs.reshape(-1, inputs.shape[-1])
        images = flat[:, : self.pixels].reshape(-1, *self.image_shape)
        features = torch.cat([self.convolutions(images).flatten(1), flat[:, self.pixels :]], dim=-1)
        return self.dense(features).reshape(*leading, -1)


class ConvEncoderNet(nn.Module):
    """Convolutional encoder network: (..., D [+ C]) → tuple of (..., head) tensors.

    Args:
        image_shape: (H, W) or (C, H, W), C·H·W = D.
        channels: output channels of each stride-2 convolution, e.g. (32, 64).
        extra_features: C, input columns after the pixels (0 unless conditional).
        widths: dense hidden layers after the convolutions (may be empty).
        activation: the activation module class after every layer but the heads.
        head_features: sizes of the outputs, e.g. (J, J) for μ and log σ².
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        channels: tuple[int, ...],
        extra_features: int,
        widths: tuple[int, ...],
        activation: type[nn.Module],
        head_features: tuple[int, ...],
    ):
        super().__init__()
        self.hidden = _EncoderBody(image_shape, channels, extra_features, widths, activation)
        self.heads = nn.Linear(self.hidden.out_features, sum(head_features))
        self.head_features = tuple(head_features)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(self.heads(self.hidden(inputs)), self.head_features, dim=-1)


class ConvDecoderNet(nn.Module):
    """Convolutional decoder network: (..., J [+ C]) → tuple of (..., D) tensors, one per head.

    Args:
        in_features: J (+ C when conditional).
        image_shape: (H, W) or (C, H, W), C·H·W = D; every head must have D features.
        channels: the encoder's channels; the transposed convolutions use them in reverse.
        widths: dense hidden layers before the feature map (may be empty).
        activation: the activation module class after every layer but the last.
        head_features: (D,) for Bernoulli logits or (D, D) for a Gaussian mean and log σ².
    """

    def __init__(
        self,
        in_features: int,
        image_shape: tuple[int, ...],
        channels: tuple[int, ...],
        widths: tuple[int, ...],
        activation: type[nn.Module],
        head_features: tuple[int, ...],
    ):
        super().__init__()
        self.image_shape = (image_channels(image_shape), *image_size(image_shape))  # (C, H, W)
        pixels = math.prod(self.image_shape)
        if any(features != pixels for features in head_features):
            raise ValueError(
                f"every head of a convolutional decoder has C·H·W = {pixels} features, got {head_features}"
            )
        self.head_features = tuple(head_features)
        shapes = feature_map_shapes(image_shape, len(channels))
        reversed_channels = tuple(reversed(channels))
        self.map_shape = (reversed_channels[0], *shapes[-1])
        dense, width = _dense_stack(in_features, widths, activation)
        body: list[nn.Module] = [
            *dense,
            nn.Linear(width, math.prod(self.map_shape)),
            activation(),
            nn.Unflatten(1, self.map_shape),
        ]
        # Transposed convolution i takes shapes[-1 - i] back to shapes[-2 - i]; the last is the head.
        outputs = (*reversed_channels[1:], len(head_features) * self.image_shape[0])
        layers = []
        for index, (previous, count) in enumerate(zip(reversed_channels, outputs)):
            target = shapes[-2 - index]
            padding = tuple(1 - side % 2 for side in target)  # even side: one more output row/column
            layers.append(nn.ConvTranspose2d(previous, count, KERNEL, STRIDE, PADDING, output_padding=padding))
        for layer in layers[:-1]:
            body += [layer, activation()]
        self.hidden = nn.Sequential(*body)
        self.heads = layers[-1]

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leading = inputs.shape[:-1]
        maps = self.heads(self.hidden(inputs.reshape(-1, inputs.shape[-1])))  # (N, heads·C, H, W)
        # Head h: channels h·C .. h·C + C - 1. (Split by the constant sizes, not by maps.shape[0]:
        # a graph exporter would fix the batch size the shape was traced with.)
        per_head = maps.unflatten(1, (len(self.head_features), self.image_shape[0]))  # (N, heads, C, H, W)
        return tuple(per_head[:, index].reshape(*leading, -1) for index in range(len(self.head_features)))


def bounded_log_variance(raw: torch.Tensor, bound: float | None) -> torch.Tensor:
    """log σ² = B·tanh(raw / B): a smooth bound to (−B, B) that is the identity near zero, part of
    the model's definition (the bound of the model is computed exactly, nothing is clipped), so
    that no variance can overflow or vanish. ``bound`` None: raw, unbounded (the paper's model)."""
    return raw if bound is None else bound * torch.tanh(raw / bound)


class MLP(nn.Module):
    """Hidden stack of `hidden_layers` (linear → activation) blocks followed by one linear head per
    output. With ``hidden_layers=0`` the heads act on the input directly (a linear model, e.g.
    factor analysis for a Gaussian decoder)."""

    def __init__(
        self,
        in_features: int,
        hidden_units: int | tuple[int, ...],
        hidden_layers: int,
        activation: str,
        head_features: tuple[int, ...],
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        widths = tuple(hidden_units) if isinstance(hidden_units, (list, tuple)) else (hidden_units,) * hidden_layers
        for units in widths:
            layers += [nn.Linear(width, units), ACTIVATIONS[activation]()]
            width = units
        self.hidden = nn.Sequential(*layers)
        # One matrix product for all heads: the heads are the column blocks of one Linear.
        self.heads = nn.Linear(width, sum(head_features))
        self.head_features = head_features

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(self.heads(self.hidden(inputs)), self.head_features, dim=-1)


def build_network(config: ModelConfig, role: str, head_features: tuple[int, ...]) -> nn.Module:
    """The encoder's (``role="encoder"``, input (..., D + C)) or decoder's (``"decoder"``, input
    (..., J + C)) network for ``config.architecture``; C = num_classes of a conditional model, else 0.
    Returns an :class:`MLP` or a network of :mod:`aevb.models.networks`, all with the same interface."""
    extra = config.num_classes or 0
    widths = config.hidden_widths()
    activation = ACTIVATIONS[config.activation]
    if config.architecture == "conv":
        if role == "encoder":
            return ConvEncoderNet(config.image_shape, config.conv_channels, extra, widths, activation, head_features)
        return ConvDecoderNet(
            config.latent_dim + extra,
            config.image_shape,
            config.conv_channels,
            tuple(reversed(widths)),
            activation,
            head_features,
        )
    if role == "encoder":
        return MLP(config.data_dim + extra, widths, len(widths), config.activation, head_features)
    return MLP(config.latent_dim + extra, tuple(reversed(widths)), len(widths), config.activation, head_features)
