"""Evaluating a trained run: the bound, importance-sampled log p(x) and the HMC estimator (App. D)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import torch

from .. import denormals
from ..data import Dataset
from ..errors import AevbError
from ..evaluation import evaluate_bound
from ..evaluation.full_vb import predictive_log_likelihood
from ..evaluation.hmc_estimator import (
    PAPER_LEAPFROG_STEPS,
    PAPER_POSTERIOR_SAMPLES,
    check_hmc_samples,
    hmc_log_likelihood,
)
from ..evaluation.importance_sampling import estimate_log_likelihood
from ..models.conditional import model_inputs
from ..models.vae import VAE
from ..objectives.estimators import bound_estimator
from ..training import TrainConfig, evaluation_data
from ..training.algorithms import trains_encoder
from ..training.trainer import TrainingData
from .data_config import data_config_of_run, given_data, load_data
from .evaluations import record_evaluation
from .layout import CONFIG_FILE, algorithm_of
from .loading import load_run, model_choice


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    num_samples: int = 100,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = 20_000,
    num_points: int | None = None,
    log_likelihood_samples: int | None = None,
    prior_mixture: float = 0.0,
    hmc: bool = False,
    hmc_samples: int = PAPER_POSTERIOR_SAMPLES,
    leapfrog_steps: int = PAPER_LEAPFROG_STEPS,
    seed: int = 0,
    parameter_draws: int = 10,
    download: bool = False,
    progress: bool = False,
    threads: int | None = None,
    checkpoint: bool = False,
    record: bool = True,
    data: Dataset | TrainingData | None = None,
) -> dict:
    """Evaluate a trained run on a data split; every number is in nats per datapoint.

    Always: the lower bound with ``num_samples`` samples of z per datapoint (``{split}_bound``,
    ``{split}_bound_stderr``, the standard error over datapoints). With
    ``log_likelihood_samples=k``: the importance-sampled log p(x) (``log_likelihood``,
    ``log_likelihood_stderr``: Monte Carlo standard error of the mean). With ``hmc``: the
    Appendix D estimate (``hmc_log_likelihood``, ...). ``num_points`` keeps the first N points.
    ``download``: fetch missing data files (checksums verified) instead of refusing. ``progress``:
    bars with the time left for every estimate (where stderr is no terminal, a line every ten
    minutes); an estimate of more than :data:`MAX_DECODER_EVALUATIONS` is refused. ``threads``
    fixes the CPU threads of importance sampling (default: torch's current count; see
    :func:`aevb.evaluation.importance_sampling.estimate_log_likelihood`). ``checkpoint``: evaluate
    the model of the run's latest checkpoint (a run still training, or stopped); the result then
    says where it was taken (``checkpoint_samples``, ``checkpoint_steps``).

    A full-VB run (App. F) averages over q(θ): the bound is E_q(θ)[𝓛_θ(x)] (a fresh θ per batch of
    points), log p(x) the predictive log E_q(θ)[p_θ(x)] from ``parameter_draws`` draws of θ with k
    importance samples each (:func:`aevb.evaluation.full_vb.predictive_log_likelihood`); the result adds
    KL(q(θ) ‖ p(θ)) and, on the training split, the full bound 𝓛(φ; X)/N.

    The result names the run (``run``). With ``record`` (the default) an evaluation of a finished
    run's model is also kept in the run, with its settings and the time it took
    (:mod:`aevb.runs.evaluations`: ``evaluations.jsonl``, shown by ``aevb compare``); a checkpoint's
    is not (the run is still another process's, or will go on), nor the best model's (``compare``
    shows the final model's).

    ``data``: the data a run trained on when they were given to :func:`~aevb.runs.train_run` in
    memory (an array, tensor, torch Dataset or DataLoader, split again as then; checked against the
    run's fingerprint); a run that loaded its data loads them again.
    """
    started = time.perf_counter()
    checkpoint = model_choice(checkpoint)
    run = _load_checked(
        run_dir,
        device,
        checkpoint,
        split=split,
        data_dir=data_dir,
        num_points=num_points,
        download=download,
        num_samples=num_samples,
        log_likelihood_samples=log_likelihood_samples,
        parameter_draws=parameter_draws,
        hmc=hmc,
        hmc_samples=hmc_samples,
        leapfrog_steps=leapfrog_steps,
        given=data,
    )
    torch.manual_seed(seed)
    with denormals.flushed(torch.get_num_threads()):  # as during training (aevb.denormals)
        result = {"run": str(run_dir)} | _bound_result(run, split, num_samples, batch_size, progress)
        if log_likelihood_samples is not None:
            result.update(
                _log_likelihood(run, log_likelihood_samples, parameter_draws, prior_mixture, progress, threads)
            )
        if hmc:
            result.update(_hmc_result(run, hmc_samples, leapfrog_steps, seed, progress))
    if record and checkpoint == "final":
        settings = dict(
            split=split,
            num_samples=num_samples,
            num_points=num_points,
            seed=seed,
            log_likelihood_samples=log_likelihood_samples,
            prior_mixture=prior_mixture,
            parameter_draws=parameter_draws,
            hmc=hmc,
            hmc_samples=hmc_samples,
            leapfrog_steps=leapfrog_steps,
        )
        record_evaluation(run_dir, result, settings, time.perf_counter() - started)
    return result


@dataclasses.dataclass
class _CheckedRun:
    """A run that passed every check of an evaluation, loaded: its model and configuration, its
    training settings, its data set and the split's rows as the model reads them."""

    model: VAE
    config: dict
    train_config: TrainConfig
    data: Dataset
    values: torch.Tensor
    full_vb: bool  # a posterior over θ (App. F)
    encoder_trained: bool
    checkpoint: str  # which model of the run (MODEL_CHOICES)


def _load_checked(
    run_dir: str | os.PathLike,
    device: str,
    checkpoint: str,
    *,
    split: str,
    data_dir: str | None,
    num_points: int | None,
    download: bool,
    num_samples: int,
    log_likelihood_samples: int | None,
    parameter_draws: int,
    hmc: bool,
    hmc_samples: int,
    leapfrog_steps: int,
    given: Dataset | TrainingData | None = None,
) -> _CheckedRun:
    """The run loaded for :func:`evaluate_run`'s settings, each checked before any estimate starts:
    the settings themselves first (before anything is loaded), then what they ask of the run's
    model and data, then the work they ask for."""
    _check_settings(
        split=split,
        num_samples=num_samples,
        log_likelihood_samples=log_likelihood_samples,
        num_points=num_points,
        parameter_draws=parameter_draws,
        hmc_samples=hmc_samples,
        leapfrog_steps=leapfrog_steps,
    )
    model, config = load_run(run_dir, device, checkpoint)
    if hmc:
        check_hmc_samples(hmc_samples, model.config.latent_dim, "hmc_samples")
    train_config, data, values = _evaluation_data(
        model, config, Path(run_dir), split, data_dir, num_points, hmc, download, given
    )
    full_vb = hasattr(model, "decoder_parameter_kl")
    encoder_trained = trains_encoder(algorithm_of(config, Path(run_dir) / CONFIG_FILE))
    _check_work(
        values.shape[0],
        num_samples=num_samples if encoder_trained else None,
        log_likelihood_samples=None
        if log_likelihood_samples is None
        else log_likelihood_samples * (parameter_draws if full_vb else 1),
        hmc_samples=2 * hmc_samples * leapfrog_steps if hmc else None,
    )  # two sets of chains
    return _CheckedRun(model, config, train_config, data, values, full_vb, encoder_trained, checkpoint)


def _bound_result(run: _CheckedRun, split: str, num_samples: int, batch_size: int, progress: bool) -> dict:
    """The result's first entries: the split's bound with ``num_samples`` samples of z per datapoint
    and what it was measured on, then what the run is (a checkpoint's, conditional, full VB with
    its KL(q(θ) ‖ p(θ)), without a trained encoder)."""
    started = time.perf_counter()
    estimator = bound_estimator(run.train_config.estimator)
    if run.encoder_trained:
        estimate = evaluate_bound(
            run.model,
            run.values,
            estimator=estimator,
            num_samples=num_samples,
            batch_size=batch_size,
            progress=progress,
        )
        bound, bound_stderr = estimate.mean, estimate.stderr
    else:  # the encoder's bound of a model whose encoder never trained means nothing
        bound = bound_stderr = math.nan
    result = {
        f"{split}_bound": bound,
        f"{split}_bound_stderr": bound_stderr,
        "split": split,
        "num_datapoints": run.values.shape[0],
        "samples_per_datapoint": num_samples,
        "estimator": estimator,
        "dataset": run.data.name,
        "seconds": time.perf_counter() - started,
    }
    return result | _run_facts(run, split, bound)


def _run_facts(run: _CheckedRun, split: str, bound: float) -> dict:
    """What the evaluated model is, where that matters to its numbers: a checkpoint's (where it was
    taken), conditional, full VB (the KL of its posterior over θ; on the training split the full
    bound), or without a trained encoder."""
    facts = {}
    if run.checkpoint == "latest":
        facts.update(
            checkpoint_samples=run.config["checkpoint"]["samples"], checkpoint_steps=run.config["checkpoint"]["steps"]
        )
    if run.checkpoint == "best":
        best = run.config["best"]
        facts.update(best_samples=best["samples"], best_steps=best["steps"], best_valid_bound=best["valid_bound"])
    if run.model.config.num_classes is not None:  # every number is of log p(x|y), y the datapoint's label
        facts["conditional"] = True
    if run.full_vb:
        with torch.no_grad():
            kl = run.model.decoder_parameter_kl(run.train_config.prior_precision).item()
        training_points = run.data.train.shape[0]
        facts.update(decoder_parameter_kl=kl, decoder_parameter_kl_per_datapoint=kl / training_points)
        if split == "train":
            facts["train_full_bound"] = bound - kl / training_points
    if not run.encoder_trained:
        facts["encoder_trained"] = False
    return facts


def _hmc_result(run: _CheckedRun, hmc_samples: int, leapfrog_steps: int, seed: int, progress: bool) -> dict:
    """The Appendix D estimate of log p(x), its chains started from the encoder's posterior where the
    encoder was trained (else from importance-resampled prior draws), seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    hmc_estimate, acceptance = hmc_log_likelihood(
        run.model,
        run.values,
        num_samples=hmc_samples,
        leapfrog_steps=leapfrog_steps,
        generator=generator,
        initial="encoder" if run.encoder_trained else "importance-resampled",
        progress=progress,
    )
    return dict(
        hmc_log_likelihood=hmc_estimate.mean,
        hmc_log_likelihood_stderr=hmc_estimate.stderr,
        hmc_log_likelihood_spread_stderr=hmc_estimate.spread_stderr,
        hmc_samples=hmc_samples,
        hmc_leapfrog_steps=leapfrog_steps,
        hmc_acceptance=acceptance,
        hmc_seconds=hmc_estimate.seconds,
    )


def _check_settings(*, split: str, num_samples: int, **counts: int | None) -> None:
    """One-line errors for settings no evaluation can take, before anything is loaded."""
    if num_samples < 1:
        raise AevbError(f"`num_samples` must be a positive integer, got {num_samples}")
    for name, value in counts.items():
        if value is not None and value < 1:
            raise AevbError(f"`{name}` must be a positive integer, got {value}")
    if split not in ("train", "valid", "test"):
        raise AevbError(f"unknown split {split!r}; choose train, valid or test")


#: The most decoder evaluations (datapoint-sample pairs) one estimate takes on: 10¹⁰ are about nine
#: hours at the ~3·10⁵ per second of a CPU (docs/performance.md, the paper's MNIST model), 200
#: times the IWAE protocol's 10,000 test points × k = 5000; more cannot finish in reasonable time.
MAX_DECODER_EVALUATIONS = 10**10
CPU_DECODER_EVALUATIONS_PER_SECOND = 3e5


def _check_work(points: int, **per_point: int | None) -> None:
    """A one-line error, naming the setting, for an estimate of more than
    :data:`MAX_DECODER_EVALUATIONS` on ``points`` datapoints (``per_point``: each estimate's
    decoder evaluations per datapoint, by the setting that asks for them; None: not asked for)."""
    from ..progress import duration_text

    for setting, count in per_point.items():
        total = 0 if count is None else points * count
        if total > MAX_DECODER_EVALUATIONS:
            raise AevbError(
                f"`{setting}` asks for {total:.3g} decoder evaluations on {points:,} points, about "
                f"{duration_text(total / CPU_DECODER_EVALUATIONS_PER_SECOND)} at a CPU's "
                f"{CPU_DECODER_EVALUATIONS_PER_SECOND:.0e} per second; one estimate takes at most "
                f"{MAX_DECODER_EVALUATIONS:.0e}: ask for fewer, or for fewer `num_points`"
            )


def _evaluation_data(
    model,
    config: dict,
    run_dir: Path,
    split: str,
    data_dir: str | None,
    num_points: int | None,
    hmc: bool,
    download: bool,
    given: Dataset | TrainingData | None = None,
):
    """The run's training settings, its data set (``given``, or loaded as config.json says), and the
    split's rows as the model reads them (binarised as in training; with one-hot labels for a
    conditional model), on the model's device."""
    where = config.get("saved_model") or str(run_dir / CONFIG_FILE)
    data_config = config.get("data")
    if "saved_model" in config and not isinstance(data_config, dict):
        raise AevbError(
            f"{where} keeps no record of the run that trained the model (its data and training settings): "
            "evaluate that run, or save the model from it (aevb export RUN --format hub)"
        )
    if not isinstance(config.get("training"), dict):
        raise AevbError(f"{where} lacks the training configuration")
    train_config = TrainConfig.from_run(config["training"], f"{where}: training")
    data = given_data(data_config, given, run_dir, where)
    if data is None:
        data = load_data(dataclasses.replace(data_config_of_run(data_config, data_dir, where), download=download))
    rows = getattr(data, split)
    if rows.shape[0] == 0:
        merged = " (the run trained on train + valid)" if data_config.get("merge_valid") else ""
        raise AevbError(f"{data.name} has no {split} split{merged}; evaluate another split")
    if rows.shape[1] != model.config.data_dim:
        raise AevbError(f"{data.name} has {rows.shape[1]} dimensions but the model expects {model.config.data_dim}")
    if hmc and model.config.num_classes is not None:
        raise AevbError("`hmc` does not handle conditional models; use `log_likelihood_samples`")
    if hmc and hasattr(model, "decoder_parameter_kl"):  # (checked before any work is done)
        raise AevbError(
            "`hmc` estimates log p(x) at one θ; a full-VB run has a posterior over θ (use `log_likelihood_samples`)"
        )
    values = model_inputs(rows, getattr(data, f"{split}_labels"), model.config)
    values = evaluation_data(values, train_config.binarize)
    if num_points is not None:  # (else streamed rows stay streamed: the estimators read them in slices)
        values = values[:num_points]
    return train_config, data, values.to(next(model.parameters()).device)


def _log_likelihood(
    run: _CheckedRun, samples: int, parameter_draws: int, prior_mixture: float, progress: bool, threads: int | None
) -> dict:
    """The importance-sampled log p(x) of the run's rows, with ``samples`` importance samples; for
    full VB the predictive log E_q(θ)[p_θ(x)] from ``parameter_draws`` draws of θ."""
    model, values = run.model, run.values
    # Without a trained encoder the only sensible proposal is the prior (Monte Carlo EM: low-dimensional z).
    prior_mixture = prior_mixture if run.encoder_trained else 1.0
    extra = {}
    if run.full_vb:
        nll = predictive_log_likelihood(
            model,
            values,
            num_samples=samples,
            parameter_draws=parameter_draws,
            prior_mixture=prior_mixture,
            progress=progress,
        )
        extra["parameter_draws"] = parameter_draws
    else:
        nll = estimate_log_likelihood(
            model, values, num_samples=samples, prior_mixture=prior_mixture, progress=progress, threads=threads
        )
    return dict(
        log_likelihood=nll.mean,
        log_likelihood_stderr=nll.stderr,
        log_likelihood_prior_mixture=prior_mixture,
        log_likelihood_spread_stderr=nll.spread_stderr,
        log_likelihood_samples=samples,
        log_likelihood_seconds=nll.seconds,
        decoder_evaluations_per_second=values.shape[0] * nll.num_samples / nll.seconds,
        **extra,
    )
