"""The memory one training step needs, checked before anything is allocated."""

from __future__ import annotations

import torch

from ..memory import FLOAT_BYTES, format_count, require_memory
from ..models.buildable import decoder_outputs_per_row, hidden_activations_per_row, parameter_count
from ..models.config import ModelConfig


def require_training_step_memory(
    config, batch_size: int, num_samples: int, device: torch.device | str, processes: int = 1
) -> None:
    """Refuse, in one line, a training step of a model of ``config`` that cannot fit on ``device``.

    The decoder runs on L × M rows (L = ``num_samples`` z per datapoint, M = ``batch_size``
    datapoints, or this process's ⌈M / processes⌉ of them), and autograd keeps each row's hidden
    activations (for ``conv`` its feature maps too), decoder outputs and z for the backward pass;
    the parameters' gradients and the optimiser's state (at least one float each: Adagrad's sum
    of squares) come on top. The parameters themselves are not counted (the model may already
    be allocated). Anything but a :class:`~aevb.models.vae.ModelConfig` (a model of another kind) is
    not checked.
    """
    if not isinstance(config, ModelConfig):
        return
    rows = int(num_samples) * -(-int(batch_size) // max(1, int(processes)))
    per_row = hidden_activations_per_row(config) + decoder_outputs_per_row(config) + int(config.latent_dim)
    needed = FLOAT_BYTES * (rows * per_row + 2 * parameter_count(config))
    require_memory(
        needed,
        f"a training step with `num_samples` {format_count(num_samples)} and `batch_size` "
        f"{format_count(batch_size)} ({format_count(rows, separators=True)} decoded rows)",
        device=device,
        advice="lower `num_samples` or `batch_size`",
    )
