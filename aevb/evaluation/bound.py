"""Evaluating a trained model: the variational lower bound on a whole dataset.

The bound of one datapoint is estimated with L samples of z (more samples, less variance); the
dataset figure is the mean over datapoints, in nats per datapoint, with its standard error over
datapoints. This is a lower bound on log p(x); issue-level estimators of log p(x) itself
(importance sampling, Appendix D) build on the same batching. The estimators are the references
of :mod:`aevb.objectives.estimators`, given the fast log p(x|z) of :mod:`.decoding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.config import ModelConfig
from ..models.families import check_estimator
from ..models.vae import evaluation_mode
from ..objectives.estimators import LatentVariableModel, get_estimator
from ..progress import progress_bar
from ..validation import require_count, require_rows
from .decoding import decoder_log_prob


@dataclass(frozen=True)
class BoundEstimate:
    """Mean per-datapoint lower bound over a dataset, in nats, and its standard error."""

    mean: float
    stderr: float
    num_datapoints: int
    num_samples: int


#: Rows (datapoint-sample pairs) evaluated at once on a CPU: enough that each chunk's fixed costs
#: (a dozen small operations) vanish beside its matrix products, few enough that its activations
#: (about 20 MB for the paper's MNIST model) do not strain memory (timings in docs/performance.md).
#: A GPU wants large batches instead.
CPU_CHUNK_ROWS = 4096
GPU_CHUNK_ROWS = 65536


def default_chunk_rows(device: torch.device | str) -> int:
    """How many (datapoint, sample) rows to evaluate at once on ``device``."""
    return CPU_CHUNK_ROWS if torch.device(device).type == "cpu" else GPU_CHUNK_ROWS


#: How each estimator's value for L samples follows from its values on disjoint chunks of them:
#: estimators A and B average per-sample terms over the L samples (eq. 6, 7; B's KL term is the
#: same in every chunk), so the chunk values weighted by their sizes average to it; the IWAE bound
#: is the log of an average of weights, log (1/L) Σ_l w_l, so chunk values combine by log-sum-exp.
LOG_MEAN_EXP_ESTIMATORS = frozenset({"IWAE"})


def chunk_shape(num_points: int, num_samples: int, max_rows: int) -> tuple[int, int]:
    """(datapoints, samples of each) to evaluate at once so that at most ``max_rows`` (datapoint,
    sample) pairs are in memory, whatever L = ``num_samples`` is: as many whole datapoints (all L
    samples) as fit, else one datapoint with its samples streamed ``max_rows`` at a time."""
    points = max(1, min(num_points, max_rows // num_samples))
    return points, max(1, min(num_samples, max_rows // points))


def _streamed_estimate(
    estimate, model: LatentVariableModel, x: torch.Tensor, num_samples: int, samples_per_pass: int, log_mean_exp: bool
) -> torch.Tensor:
    """The L-sample estimate (M,) for x (M, D), computed ``samples_per_pass`` samples at a time and
    combined exactly (see :data:`LOG_MEAN_EXP_ESTIMATORS`), in float64 so that a million chunks add
    up without losing digits."""
    combined = None
    for drawn in range(0, num_samples, samples_per_pass):
        count = min(samples_per_pass, num_samples - drawn)
        value = estimate(model, x, count, log_likelihood=decoder_log_prob)
        if log_mean_exp:  # log Σ_l w_l over the chunk = its log-mean + log count
            part = value.double() + math.log(count)
            combined = part if combined is None else torch.logaddexp(combined, part)
        else:  # Σ_l of the per-sample terms over the chunk = its mean × count
            part = value.double() * count
            combined = part if combined is None else combined + part
    mean = combined - math.log(num_samples) if log_mean_exp else combined / num_samples
    return mean.to(value.dtype)


@torch.no_grad()
def per_datapoint_bound(
    model: LatentVariableModel,
    data: torch.Tensor,
    *,
    estimator: str | None = None,
    num_samples: int = 1,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Per-datapoint bound estimates, shape (N,), nats, for data of shape (N, D).

    ``estimator``: "A", "B" or "IWAE"; by default the model's own (``model.default_estimator``:
    B where KL(q ‖ p) has a closed form, else A), or B for a model that does not say.
    ``batch_size`` bounds the number of (datapoint, sample) pairs evaluated at once (default:
    :func:`default_chunk_rows` of the data's device), for any L = ``num_samples``: when the L
    samples of one datapoint are more than that, they are streamed in chunks whose estimates
    are combined into the L-sample estimate (:func:`chunk_shape`). ``progress``: a bar over the
    N·L (datapoint, sample) pairs, with the time left.
    """
    require_rows(data, model)
    num_samples = require_count(num_samples, "num_samples")
    estimator = estimator if estimator is not None else getattr(model, "default_estimator", "B")
    estimate = get_estimator(estimator)
    if isinstance(getattr(model, "config", None), ModelConfig):
        check_estimator(model.config, estimator)
    if batch_size is None:
        batch_size = default_chunk_rows(data.device)
    batch_size = require_count(batch_size, "batch_size")
    points_per_pass, samples_per_pass = chunk_shape(data.shape[0], num_samples, batch_size)
    log_mean_exp = estimator.upper() in LOG_MEAN_EXP_ESTIMATORS
    parts = []
    bar = progress_bar(
        data.shape[0] * num_samples, unit="sample", desc=f"bound, L = {num_samples}", enabled=progress, logged=True
    )
    with evaluation_mode(model):
        for start in range(0, data.shape[0], points_per_pass):
            x = data[start : start + points_per_pass]
            if samples_per_pass == num_samples:  # the whole L in one pass
                parts.append(estimate(model, x, num_samples, log_likelihood=decoder_log_prob))
            else:
                parts.append(_streamed_estimate(estimate, model, x, num_samples, samples_per_pass, log_mean_exp))
            bar.update(x.shape[0] * num_samples)
    bar.close()
    return torch.cat(parts)


def evaluate_bound(
    model: LatentVariableModel,
    data: torch.Tensor,
    *,
    estimator: str | None = None,
    num_samples: int = 1,
    batch_size: int | None = None,
    progress: bool = False,
) -> BoundEstimate:
    """Mean lower bound per datapoint over ``data`` (N, D), nats, with its standard error over
    datapoints; the arguments are :func:`per_datapoint_bound`'s."""
    values = per_datapoint_bound(
        model, data, estimator=estimator, num_samples=num_samples, batch_size=batch_size, progress=progress
    ).double()
    count = values.numel()
    stderr = values.std().item() / math.sqrt(count) if count > 1 else float("nan")
    return BoundEstimate(mean=values.mean().item(), stderr=stderr, num_datapoints=count, num_samples=num_samples)
