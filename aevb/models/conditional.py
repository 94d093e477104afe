"""A conditional VAE: the paper's future work (iv), "supervised models with latent variables" (§6).

The model of a datapoint x with class label y ∈ {0, ..., C−1}:

* prior p(z) = N(0, I), independent of y;
* decoder p_θ(x|z, y): the decoder of :mod:`aevb.models.vae` (Bernoulli or Gaussian, MLP or
  convolutional) with the one-hot y concatenated to its input z;
* encoder q_φ(z|x, y) = N(μ(x, y), diag σ²(x, y)): the encoder with the one-hot y concatenated
  to its input x (a convolutional encoder appends it to its flattened feature maps).

Its bound is that of §2.2 with everything conditioned on y, a lower bound on log p(x|y):

    𝓛(θ, φ; x, y) = −KL(q(z|x, y) ‖ p(z)) + E_q[log p(x|z, y)],

and importance sampling with q(z|x, y) as proposal estimates log p(x|y).

Data layout. A datapoint is the pair (x, y), held as one row [x, one-hot(y)] of D + C columns
(:func:`conditioned_rows`). The training machinery sees one (N, D + C) tensor per split and
needs nothing new: minibatches, multi-process shards, checkpoints and evaluation index rows, so
labels travel with their images; dynamic binarisation leaves the one-hot columns exactly as they
are (a Bernoulli draw of 0 or 1 is that number). The estimators reach the decoder through
:func:`aevb.objectives.estimators.decoder_log_likelihood` (and evaluation through
:func:`aevb.evaluation.decoding.decoder_log_prob`), which hand a conditional model's rows to its
:meth:`ConditionalVAE.decoder_log_prob`.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution
from torch.nn import functional as F

from ..errors import AevbError
from ..memory import FLOAT_BYTES, format_count, require_memory
from .vae import VAE, ModelConfig


def number_of_classes(labels: list[torch.Tensor | None], name: str) -> int:
    """C = 1 + the largest label over the splits; a one-line error when a split has no labels, or
    when the one-hot labels of all the splits' datapoints, (N, C) floats, cannot fit in memory
    (labels up to 10¹² would ask for 4 TB per datapoint)."""
    if any(split is None for split in labels):
        raise AevbError(f"`conditional` needs class labels, and {name} has none")
    present = [split for split in labels if split.numel()]
    if not present or min(int(split.min()) for split in present) < 0:
        raise AevbError(f"{name}: class labels must be integers 0, 1, ...")
    classes = 1 + max(int(split.max()) for split in present)
    datapoints = sum(int(split.numel()) for split in present)
    # Every split becomes rows [x, one-hot(y)] (conditioned_rows), all held at once for training.
    require_memory(
        FLOAT_BYTES * datapoints * classes,
        f"{name}: one-hot encoding the class labels of its {format_count(datapoints, separators=True)} "
        f"datapoints ({format_count(classes)} classes, labels up to {format_count(classes - 1)})",
        advice="number the classes 0, 1, ..., C - 1",
    )
    return classes


def conditioned_rows(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Datapoints (x, y) as rows [x, one-hot(y)]: (N, D + C) for x (N, D) and labels (N,) in 0..C−1."""
    if labels.shape != x.shape[:1]:
        raise AevbError(f"{x.shape[0]} datapoints but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise AevbError(
            f"labels must lie in 0..{num_classes - 1} for this model, got {int(labels.min())}..{int(labels.max())}"
        )
    return torch.cat([x, F.one_hot(labels.to(x.device), num_classes).to(x.dtype)], dim=1)


def model_inputs(x: torch.Tensor, labels: torch.Tensor | None, config: ModelConfig) -> torch.Tensor:
    """What a model of ``config`` takes as datapoints: ``x`` itself, or [x, one-hot(y)] when conditional."""
    if config.num_classes is None:
        return x
    if labels is None:
        raise AevbError("this conditional model needs class labels, and the data have none")
    return conditioned_rows(x, labels, config.num_classes)


class ConditionalVAE(VAE):
    """The VAE of :mod:`aevb.models.vae` with every network conditioned on a one-hot class label.

    Datapoints are rows [x, one-hot(y)] of width D + C (see the module docstring); ``encode`` and
    :meth:`decoder_log_prob` take them, ``decode`` takes z and the one-hot labels.
    """

    @classmethod
    def builds(cls, config: ModelConfig) -> bool:
        """A conditional VAE is the model of every configuration with class labels."""
        return config.num_classes is not None

    def __init__(self, config: ModelConfig):
        if config.num_classes is None:
            raise AevbError("a ConditionalVAE needs num_classes")
        super().__init__(config)
        self.num_classes = int(config.num_classes)

    @property
    def input_width(self) -> int:
        """D + C: an image's pixels, then its one-hot label."""
        return self.config.data_dim + self.num_classes

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., D + C) rows → x (..., D) and one-hot y (..., C)."""
        return rows[..., : self.config.data_dim], rows[..., self.config.data_dim :]

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels (...,) → one-hot (..., C) in the model's dtype and device."""
        return F.one_hot(labels.to(self._prior_loc.device).long(), self.num_classes).to(self._prior_loc.dtype)

    def encode(self, rows: torch.Tensor) -> Distribution:
        """q_φ(z|x, y) for rows [x, one-hot(y)] of shape (..., D + C): batch shape (...), event (J,)."""
        return self.encoder(rows)

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> Distribution:
        """p_θ(x|z, y) for z (..., M, J) and one-hot y (M, C) (or (..., M, C)): batch shape (..., M)."""
        condition = condition.expand(*z.shape[:-1], condition.shape[-1])
        return self.decoder(torch.cat([z, condition], dim=-1))

    def decoder_log_prob(self, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """log p(x|z, y), (L, M) nats, for z (L, M, J) and rows [x, one-hot(y)] (M, D + C)."""
        x, condition = self.split(rows)
        return self.decode(z, condition).log_prob(x)

    @torch.no_grad()
    def sample(
        self, num_samples: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean images E[x|z, y] for z ~ p(z): (num_samples, D). ``labels`` (num_samples,) gives each
        image's class; by default they cycle through 0, 1, ..., C−1."""
        if labels is None:
            labels = torch.arange(num_samples) % self.num_classes
        labels = torch.as_tensor(labels)
        if labels.shape != (num_samples,) or int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise AevbError(f"labels must be {num_samples} classes in 0..{self.num_classes - 1}")
        return self.mean(self.draw_prior(num_samples, generator), labels)

    @torch.no_grad()
    def mean(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """E[x|z, y]: (M, D) for z (M, J) and labels (M,)."""
        return self.decoder.mean(torch.cat([z, self.one_hot(labels)], dim=-1))

    @torch.no_grad()
    def class_grid(self, columns: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class-conditional samples E[x|z_j, y = c]: (C · columns, D), row c of the grid holding class
        c, column j the same z_j ~ p(z) in every row (so a column shares its style across classes)."""
        z = self.draw_prior(columns, generator)
        labels = torch.arange(self.num_classes).repeat_interleave(columns)
        return self.mean(z.repeat(self.num_classes, 1), labels)

    @torch.no_grad()
    def reconstruct(self, rows: torch.Tensor) -> torch.Tensor:
        """E[x|z, y] at z = μ(x, y): (M, D) for rows [x, one-hot(y)] (M, D + C)."""
        return self.decoder.mean(torch.cat([self.posterior_centre(self.encode(rows)), self.split(rows)[1]], dim=-1))
