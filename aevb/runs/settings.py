"""The library's defaults for a new run: the paper's model for a dataset (§5), the device, and a
step-size selection that fits the training budget."""

from __future__ import annotations

import dataclasses

import torch

from ..models.conditional import number_of_classes
from ..data import Dataset
from ..errors import AevbError
from ..models.vae import ModelConfig
from ..training import TrainConfig
from .data_config import value_ranges




#: §5: hidden units per dataset (500 for MNIST, 200 for the smaller Frey Face).
PAPER_HIDDEN_UNITS = {"frey": 200}


DEFAULT_HIDDEN_UNITS = ModelConfig.hidden_units   # (ModelConfig owns it: 500, §5's MNIST width)


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; otherwise 'cpu', 'cuda' or 'cuda:N', which must
    be available. aevb's engines are written for CPUs (native kernels) and CUDA (fused torch
    operations); other backends (mps, xpu, meta) are refused rather than half supported."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    supported = "auto, cpu, cuda or cuda:N"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AevbError(f"unknown device {device!r}; use {supported}") from None
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index not in (None, 0)):
        raise AevbError(f"device {device!r} is not supported; use {supported}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise AevbError("device cuda was asked for but no CUDA device is available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise AevbError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s), cuda:0 and up")
    return resolved


def model_config_for(data: Dataset, latent_dim: int | None = None, hidden_units: int | tuple[int, ...] | None = None,
                     likelihood: str | None = None, sigmoid_mean: bool | None = None,
                     **overrides) -> ModelConfig:
    """The paper's model for ``data``, with explicit choices taking precedence; any other keyword is
    a :class:`~aevb.models.vae.ModelConfig` field, and a field not given keeps ModelConfig's default.

    Defaults that depend on the data: 500 hidden units (200 for Frey Face, §5); a Bernoulli decoder
    when every value lies in [0, 1] except for Frey Face, whose decoder is Gaussian with a sigmoid
    mean (§5); Gaussian otherwise. ``conditional=True``: a conditional VAE on the data's class
    labels (aevb.models.conditional).
    """
    if overrides.pop("conditional", False):
        overrides["num_classes"] = number_of_classes([data.train_labels, data.valid_labels, data.test_labels],
                                                     data.name)
    if latent_dim is not None:
        overrides["latent_dim"] = latent_dim
    if likelihood is None:
        in_unit_interval = all(0 <= low and high <= 1 for low, high in value_ranges(data).values())
        likelihood = "bernoulli" if in_unit_interval and data.name != "frey" else "gaussian"
    if sigmoid_mean is None:
        sigmoid_mean = likelihood == "gaussian" and data.name == "frey"
    if hidden_units is None:
        hidden_units = PAPER_HIDDEN_UNITS.get(data.name, DEFAULT_HIDDEN_UNITS)
    return ModelConfig(data_dim=data.data_dim, hidden_units=hidden_units,
                       likelihood=likelihood, sigmoid_mean=sigmoid_mean, image_shape=data.image_shape,
                       **overrides)


def fit_selection_to_budget(config: TrainConfig, dataset_size: int) -> TrainConfig:
    """Shorten the step-size selection so that it leaves training samples to the run.

    The selection's iterations count towards the run (the winner continues from them), so with
    ``selection_steps`` minibatches reaching the total the run would overshoot --max-samples /
    --epochs and have no evaluation point. The number of steps actually used is what config.json
    records.
    """
    if config.step_size is not None:
        return config
    total = config.total_samples(dataset_size)
    per_step = min(config.batch_size, dataset_size)
    fitting = (total - 1) // per_step
    if fitting < 1:
        raise AevbError(f"{total:,} training samples are too few to choose the step size (one minibatch is "
                        f"{per_step:,}); pass `step_size` or train on more samples")
    if config.selection_steps > fitting:
        return dataclasses.replace(config, selection_steps=fitting)
    return config
