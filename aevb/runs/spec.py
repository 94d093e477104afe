"""The typed specification of a training run, :class:`RunSpec`: which data, which model, how to
train it (Algorithm 1's settings and the algorithm), and how to run it (device, threads,
checkpoints, trackers). It is resolved once — the library's defaults, then a config file, then the
command line's flags (:meth:`RunSpec.from_settings`) — and passed whole to
:func:`aevb.runs.train_run`. ``aevb train --print-config`` prints it resolved against the data, and
a ``--config`` file (a run's config.json, or any part of one) maps onto it.

Only the model has settings that the data decide (§5: the width of the hidden layer, the
decoder's family): :class:`ModelSpec` leaves them None until :meth:`ModelSpec.resolve` meets the
data; every other default is the one its configuration class owns.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import torch

from ..choices import DEFAULT_CHECKPOINT_EVERY
from ..config import JsonConfig, check_fields
from ..data import Dataset
from ..errors import AevbError
from ..models.conditional import number_of_classes
from ..models.config import ModelConfig
from ..models.families import PAPER_POSTERIOR, PAPER_PRIOR, check_pair, default_estimator
from ..threads import available_cpus
from ..training import TrainConfig
from ..training.algorithms import algorithm_class
from ..training.reporting import TrainingWarning
from .data_config import DataConfig, data_config_of_run, value_ranges
from .loggers import LOGGERS

#: §5: hidden units per dataset (500 for MNIST, ModelConfig's default; 200 for the smaller Frey Face).
PAPER_HIDDEN_UNITS = {"frey": 200}

#: The model settings that the data give (their width and image shape; the classes of a
#: conditional model, which ``conditional`` asks for).
DATA_GIVEN = ("data_dim", "image_shape", "num_classes")


@dataclass
class ModelSpec(JsonConfig):
    """The model a run asks for: :class:`~aevb.models.config.ModelConfig`'s settings less those the
    data give (:data:`DATA_GIVEN`), with ``conditional`` asking for the data's class labels. A
    setting left None here is decided by the data (:meth:`resolve`); every other default is
    ModelConfig's (its docstring and comments say what each setting means)."""

    latent_dim: int = ModelConfig.latent_dim
    hidden_units: int | tuple[int, ...] | None = None  # None: §5's width for the data (200 for frey, else 500)
    hidden_layers: int | None = ModelConfig.hidden_layers
    activation: str = ModelConfig.activation
    likelihood: str | None = None  # None: bernoulli for data in [0, 1] (but frey), else gaussian
    sigmoid_mean: bool | None = None  # None: on for a Gaussian decoder of frey (§5)
    decoder_variance: str = ModelConfig.decoder_variance
    init: str = ModelConfig.init
    init_std: float = ModelConfig.init_std
    log_variance_bound: float | None = ModelConfig.log_variance_bound
    architecture: str = ModelConfig.architecture
    conv_channels: tuple[int, ...] = ModelConfig.conv_channels
    conditional: bool = False
    decoder_posterior: str = ModelConfig.decoder_posterior
    decoder_posterior_init_std: float = ModelConfig.decoder_posterior_init_std
    posterior: str = ModelConfig.posterior
    prior: str = ModelConfig.prior

    def __post_init__(self) -> None:
        if isinstance(self.hidden_units, list):
            self.hidden_units = tuple(self.hidden_units)
        self.conv_channels = tuple(self.conv_channels)
        if (self.posterior, self.prior) != (PAPER_POSTERIOR, PAPER_PRIOR):
            check_pair(self.posterior, self.prior)  # before anything else is said about the pair

    @classmethod
    def of_model(cls, config: ModelConfig) -> ModelSpec:
        """The spec that asks for the model ``config`` on the data it was made for."""
        return cls(**_asked_for(dataclasses.asdict(config)))

    def resolve(self, data: Dataset, algorithm_options: Mapping[str, object] = MappingProxyType({})) -> ModelConfig:
        """The model on ``data``: its width and image shape, what the data decide where this spec
        leaves it None, then the settings an algorithm needs (``algorithm_options``: full VB's
        posterior over the decoder's parameters, App. F). A one-line error for a model the
        settings do not describe."""
        likelihood = self.likelihood
        if likelihood is None:
            in_unit_interval = all(0 <= low and high <= 1 for low, high in value_ranges(data).values())
            likelihood = "bernoulli" if in_unit_interval and data.name != "frey" else "gaussian"
        sigmoid_mean = self.sigmoid_mean
        if sigmoid_mean is None:
            sigmoid_mean = likelihood == "gaussian" and data.name == "frey"
        hidden_units = self.hidden_units
        if hidden_units is None:
            hidden_units = PAPER_HIDDEN_UNITS.get(data.name, ModelConfig.hidden_units)
        num_classes = None
        if self.conditional:
            num_classes = number_of_classes([data.train_labels, data.valid_labels, data.test_labels], data.name)
        settings = {name: value for name, value in dataclasses.asdict(self).items() if name != "conditional"}
        settings |= {"likelihood": likelihood, "sigmoid_mean": sigmoid_mean, "hidden_units": hidden_units}
        return ModelConfig(
            data_dim=data.data_dim,
            image_shape=data.image_shape,
            num_classes=num_classes,
            **(settings | dict(algorithm_options)),
        )


@dataclass
class RunOptions(JsonConfig):
    """How a run runs: none of it changes what is trained (a resumed run may change any of it)."""

    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N
    threads: int | None = None  # CPU threads of a step, fixed; None: adaptive (aevb.threads)
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY  # steps between checkpoints (and one per evaluation point)
    loggers: tuple[str, ...] = ()  # experiment trackers of aevb.runs.loggers.LOGGERS
    progress: bool = True  # a progress bar on stderr
    report_every: float | None = None  # seconds between progress lines on stderr; None: none
    track_test: bool = False  # the test bound at every evaluation point (figure reproduction)

    def __post_init__(self) -> None:
        resolve_device(self.device)
        if self.threads is not None and not 1 <= self.threads <= available_cpus():
            raise AevbError(
                f"`threads` must be a whole number in 1 ... {available_cpus()} (the CPUs available to "
                f"aevb), got {self.threads}"
            )
        if self.checkpoint_every < 1:
            raise AevbError(f"`checkpoint_every` must be a positive integer, got {self.checkpoint_every}")
        self.loggers = tuple(dict.fromkeys(self.loggers))  # each tracker once
        for name in self.loggers:
            if name not in LOGGERS:
                raise AevbError(f"unknown logger {name!r}; choose one of {', '.join(LOGGERS)}")
        if self.report_every is not None and not (math.isfinite(self.report_every) and self.report_every > 0):
            raise AevbError(f"`report_every` must be a positive number of seconds, got {self.report_every}")

    def check_loggers_installed(self) -> None:
        """A one-line error for a tracker whose package is missing (before anything is written)."""
        for name in self.loggers:
            LOGGERS[name].check_available()


#: The sections of a :class:`RunSpec` that are configurations, by their name in a settings mapping.
SECTIONS = {"data": DataConfig, "model": ModelSpec, "training": TrainConfig, "run": RunOptions}


@dataclass
class RunSpec:
    """A whole training run: ``train_run(spec, out)`` trains it into ``out``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    training: TrainConfig = field(default_factory=TrainConfig)
    algorithm: str = "aevb"  # a name of aevb.training.algorithms.ALGORITHMS
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        algorithm_class(self.algorithm)

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], where: str | None = None) -> RunSpec:
        """The spec of ``settings``, a mapping shaped like :meth:`to_dict` in which any section and
        any setting may be left out (the library's default applies): what a config file and the
        command line give. One-line errors for an unknown section or setting and a value of the
        wrong type; ``where`` (a file) prefixes them, and names the section and setting as the file
        has them, where the settings come from one.

        Defaults that follow from other settings are resolved here: estimator B needs KL(q ‖ p) in
        closed form (App. B), so a posterior/prior pair without one trains with estimator A (eq. 6)
        unless an estimator is given (a :class:`TrainingWarning` says so)."""
        prefix = f"{where}: " if where else ""
        if not isinstance(settings, Mapping):
            raise AevbError(
                f"{prefix}expected a mapping of sections ({', '.join(SECTIONS)}, algorithm), got {settings!r}"
            )
        unknown = set(settings) - {*SECTIONS, "algorithm"}
        if unknown:
            raise AevbError(
                f"{prefix}unknown sections {sorted(unknown)}; a run has {', '.join(SECTIONS)} and algorithm"
            )
        sections = {name: settings.get(name, {}) for name in SECTIONS}
        for name, values in sections.items():
            if not isinstance(values, Mapping):
                raise AevbError(f"{prefix}{name} must be a mapping of settings, got {values!r}")
        algorithm = settings.get("algorithm", cls.algorithm)
        if not isinstance(algorithm, str):
            raise AevbError(f"{prefix}algorithm must be a string, got {algorithm!r}")
        model = _section(ModelSpec, sections["model"], where, "model")
        training = dict(sections["training"])
        if "decoder_posterior_init_std" in sections["model"] and algorithm != "full-vb":
            raise AevbError(f"{prefix}`decoder_posterior_init_std` applies to `algorithm` full-vb only")
        if "estimator" not in training and algorithm == "aevb":
            estimator = default_estimator(model.posterior, model.prior)
            if estimator != TrainConfig.estimator:
                warnings.warn(
                    f"KL({model.posterior} || {model.prior}) has no closed form; training with estimator "
                    f"{estimator} (eq. 6) instead of {TrainConfig.estimator}",
                    TrainingWarning,
                )
                training["estimator"] = estimator
        return cls(
            data=_section(DataConfig, sections["data"], where, "data"),
            model=model,
            training=_section(TrainConfig, training, where, "training"),
            algorithm=algorithm,
            run=_section(RunOptions, sections["run"], where, "run"),
        )

    def to_dict(self) -> dict:
        """The spec as settings (JSON-ready: tuples as tuples, which JSON writes as lists)."""
        return {
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "training": self.training.to_dict(),
            "algorithm": self.algorithm,
            "run": self.run.to_dict(),
        }


def _section(config: type, values: Mapping, where: str | None, name: str):
    """Section ``name`` of a :class:`RunSpec` from ``values``: read from the file ``where`` (its
    errors name the file, the section and the setting), or given by a caller, whose errors name
    the setting as the caller passes it (`name`: the command line shows its flag)."""
    if where:
        return config.from_dict(dict(values), f"{where}: {name}")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(config)})
    if unknown:
        raise AevbError(
            f"unknown {name} settings {unknown}; {name} has {', '.join(f.name for f in dataclasses.fields(config))}"
        )
    check_fields(config, values, name)
    return config(**values)


def _asked_for(model: Mapping) -> dict:
    """A model's settings (a ModelConfig's, as a mapping) as a :class:`ModelSpec` asks for them:
    without what the data give; a model with classes asks for ``conditional``."""
    settings = {name: value for name, value in model.items() if name not in DATA_GIVEN}
    if model.get("num_classes") is not None:
        settings["conditional"] = True
    return settings


def settings_of_run_config(config: Mapping, where: str) -> dict:
    """The settings (as :meth:`RunSpec.from_settings` takes them) of a config file: a run's
    config.json, the output of ``--print-config``, or any part of either. The model's data-given
    fields are left to the data of the new run (a model that had classes asks for
    ``conditional``); what only a run's config.json records (the aevb version, the data's name and
    fingerprint, ...) is dropped, and its data section read as a run's (:func:`data_config_of_run`:
    runs of an older aevb had grey levels k/255)."""
    is_a_run = "format_version" in config
    # Any other key of a run's config.json is a record of how it ran; of another file, a mistake.
    settings = {key: value for key, value in config.items() if key in {*SECTIONS, "algorithm"} or not is_a_run}
    if "data" in config and is_a_run:
        settings["data"] = dataclasses.asdict(data_config_of_run(config["data"], where=where))
    if isinstance(config.get("model"), Mapping):
        model = _asked_for(config["model"])
        if config.get("algorithm") != "full-vb":  # recorded by every model, used by full VB's alone
            model.pop("decoder_posterior_init_std", None)
        settings["model"] = model
    return settings


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
            raise AevbError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                "CUDA device(s), cuda:0 and up"
            )
    return resolved
