"""A run is a directory: everything needed to inspect, evaluate, sample from and rerun a training.

Layout of ``RUN_DIR``::

    config.json          full configuration (data, model, training, device), written first
    metrics.jsonl        one JSON object per evaluation point (see aevb.training.Metrics)
    model.safetensors    weights (no pickle) ...
    model.json           ... and the model configuration to rebuild it
    summary.json         final numbers: chosen step size, bounds, wall time, throughput
    samples.png          samples E[x|z], z ~ p(z) (Figs. 7–11)
    reconstructions.png  validation images above their reconstructions
    bound.png            bound against training samples (Fig. 2)
    manifold.png         for a 2-D latent space, the learned manifold (Figs. 4–5)
    tensorboard/         TensorBoard scalars, when asked for

``train_run`` never writes into a directory that already holds a run unless told to overwrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import torch

from . import __version__
from .checkpoint import (atomic_write_bytes, atomic_write_json, check_format_version, load_model, named_os_error,
                         read_json, save_model)
from .config import check_fields
from .data import DATASET_NAMES, USER_PIXEL_DIVISOR, Dataset, load_dataset, resolve_data_dir
from .distributed import check_distributable, from_environment, local_device
from .errors import AevbError, TrainingInterrupted
from .estimators import bound_estimator
from .evaluation import evaluate_bound
from .families import check_training, prior_icdf
from .hmc_estimator import PAPER_LEAPFROG_STEPS, PAPER_POSTERIOR_SAMPLES, hmc_log_likelihood
from .importance_sampling import estimate_log_likelihood
from .full_vb import FullVBVAE, predictive_log_likelihood
from .figures import save_bound_curve, save_manifold, save_reconstructions, save_samples
from .conditional import model_inputs, number_of_classes
from .model import VAE, ModelConfig, build_model
from .memory import require_sampling_memory, require_training_step_memory
from .run_lock import RunLock
from .training import Metrics, Trainer, TrainConfig, evaluation_data
from .training_checkpoints import DIRECTORY as CHECKPOINTS
from .training_checkpoints import check_checkpoint_fits, has_checkpoint, load_checkpoint, save_checkpoint

RUN_FORMAT_VERSION = 1
# log σ² = B·tanh(raw/B) with B = 30 keeps every variance in (1e-13, 1e13), finite in float32 with
# its inverse, and bends log σ² by under 4% where |log σ²| < 10, where trained VAEs live.
DEFAULT_LOG_VARIANCE_BOUND = 30.0
DEFAULT_CHECKPOINT_EVERY = 2000   # steps between checkpoints, besides one at every evaluation point
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
FIGURE_FILES = ("samples.png", "reconstructions.png", "bound.png", "manifold.png")
TENSORBOARD_DIRECTORY = "tensorboard"
#: What ``--overwrite`` removes before a new run starts: every file a run writes, so that nothing
#: of the old run (weights, checkpoints, a manifold of another latent dimension, ...) is mixed with
#: the new one or resumed under its configuration.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, "model.safetensors", "model.json", *FIGURE_FILES)
RUN_DIRECTORIES = (CHECKPOINTS, TENSORBOARD_DIRECTORY)
RUN_FILE_PATTERNS = ("samples-seed*.png", "samples-seed*.npy")   # aevb sample's default outputs

#: §5: hidden units per dataset (500 for MNIST, 200 for the smaller Frey Face).
PAPER_HIDDEN_UNITS = {"frey": 200}
DEFAULT_HIDDEN_UNITS = 500


@dataclass
class DataConfig:
    """Which data a run uses; enough to load it again for evaluation."""

    dataset: str = "mnist-sample"
    data_dir: str | None = None
    download: bool = False
    train_limit: int | None = None    # use only the first N training points (Fig. 3's Ntrain)
    pixel_divisor: float | None = None   # grey level k → k / divisor; None: the dataset's (256 for the paper's data)
    merge_valid: bool = False         # train on train + valid, no validation split (the IWAE protocol: 60000 MNIST)


def load_data(data_config: DataConfig) -> Dataset:
    """The dataset a run uses: its validation split appended to the training split when
    ``merge_valid``, then the training split cut to ``train_limit`` points when given."""
    data = load_dataset(data_config.dataset, data_config.data_dir, download=data_config.download,
                        pixel_divisor=data_config.pixel_divisor)
    if data_config.merge_valid:
        labels = None if data.train_labels is None or data.valid_labels is None else \
            torch.cat([data.train_labels, data.valid_labels])
        data = dataclasses.replace(data, train=torch.cat([data.train, data.valid]), train_labels=labels,
                                   valid=data.valid[:0], valid_labels=None if data.valid_labels is None
                                   else data.valid_labels[:0])
    limit = data_config.train_limit
    if limit is None:
        return data
    if not 1 <= limit <= data.train.shape[0]:
        raise AevbError(f"train limit {limit} is outside 1..{data.train.shape[0]} for {data.name}")
    labels = None if data.train_labels is None else data.train_labels[:limit]
    return dataclasses.replace(data, train=data.train[:limit], train_labels=labels)


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; anything else must be a valid, available device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise AevbError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AevbError("device cuda was asked for but no CUDA device is available")
    return resolved


def model_config_for(data: Dataset, latent_dim: int = 20, hidden_units: int | tuple[int, ...] | None = None,
                     likelihood: str | None = None, sigmoid_mean: bool | None = None,
                     **overrides) -> ModelConfig:
    """The paper's model for ``data``, with explicit choices taking precedence.

    Defaults: 500 hidden units (200 for Frey Face); a Bernoulli decoder when every value lies in
    [0, 1] except for Frey Face, whose decoder is Gaussian with a sigmoid mean (§5); Gaussian
    otherwise; log-variances bounded to ±:data:`DEFAULT_LOG_VARIANCE_BOUND` (``0`` or ``None``:
    unbounded). ``conditional=True``: a conditional VAE on the data's class labels (aevb.conditional).
    """
    if overrides.pop("conditional", False):
        overrides["num_classes"] = number_of_classes([data.train_labels, data.valid_labels, data.test_labels],
                                                     data.name)
    bound = overrides.pop("log_variance_bound", DEFAULT_LOG_VARIANCE_BOUND)
    overrides["log_variance_bound"] = bound or None
    if likelihood is None:
        in_unit_interval = all(0 <= low and high <= 1 for low, high in _value_ranges(data).values())
        likelihood = "bernoulli" if in_unit_interval and data.name != "frey" else "gaussian"
    if sigmoid_mean is None:
        sigmoid_mean = likelihood == "gaussian" and data.name == "frey"
    if hidden_units is None:
        hidden_units = PAPER_HIDDEN_UNITS.get(data.name, DEFAULT_HIDDEN_UNITS)
    return ModelConfig(data_dim=data.data_dim, latent_dim=latent_dim, hidden_units=hidden_units,
                       likelihood=likelihood, sigmoid_mean=sigmoid_mean, image_shape=data.image_shape,
                       **overrides)


def _value_ranges(data: Dataset) -> dict[str, tuple[float, float]]:
    """(min, max) of each non-empty split; NaN or ±inf show up in them (min/max propagate NaN)."""
    return {name: (float(split.min()), float(split.max())) for name in ("train", "valid", "test")
            if (split := getattr(data, name)).numel()}


def check_data_fits_model(data: Dataset, model: ModelConfig, train: TrainConfig) -> None:
    """A Bernoulli decoder and dynamic binarisation need every value in [0, 1]."""
    needs_unit_interval = model.likelihood == "bernoulli" or train.binarize == "dynamic"
    for split_name, (low, high) in _value_ranges(data).items():
        if not (math.isfinite(low) and math.isfinite(high)):
            raise AevbError(f"{data.name}: the {split_name} split holds NaN or infinite values")
        if needs_unit_interval and (low < 0 or high > 1):
            why = "a Bernoulli decoder" if model.likelihood == "bernoulli" else "dynamic binarization"
            raise AevbError(f"{data.name}: {split_name} values lie in [{low:g}, {high:g}], but {why} needs "
                            "values in [0, 1]; rescale the data or use --likelihood gaussian")


def create_run_dir(out: Path) -> Path:
    """``out`` as a directory, created if missing; a one-line error when it cannot be."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AevbError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AevbError(f"cannot create run directory {out}: {error.strerror}") from None
    return out


def holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in
                                (CONFIG_FILE, METRICS_FILE, "model.safetensors", CHECKPOINTS))


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out`` or check that it holds no run; refuse to clobber one unless ``overwrite``,
    which removes everything a run wrote there (files, checkpoints, TensorBoard logs)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AevbError(f"--out {out} exists and is not a directory")
    if holds_run(out):
        if not overwrite:
            raise AevbError(f"{out} already holds a run; choose another --out or pass --overwrite")
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for pattern in RUN_FILE_PATTERNS:
            for path in out.glob(pattern):
                path.unlink(missing_ok=True)
        for name in RUN_DIRECTORIES:
            shutil.rmtree(out / name, ignore_errors=True)
            if (out / name).exists():
                raise AevbError(f"cannot remove {out / name} of the run being replaced")
    return create_run_dir(out)


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
                        f"{per_step:,}); pass --step-size or train on more samples")
    if config.selection_steps > fitting:
        return dataclasses.replace(config, selection_steps=fitting)
    return config


def _stored_data_config(data_config: DataConfig) -> dict:
    """The data configuration as config.json keeps it: paths made absolute, and for a dataset read
    from a data directory the directory actually used (also when it came from ``$AEVB_DATA_DIR``),
    so that evaluate and sample find the data from any working directory and any shell."""
    stored = dataclasses.asdict(data_config)
    if data_config.dataset not in DATASET_NAMES:
        stored["dataset"] = str(Path(data_config.dataset).expanduser().resolve())
    elif data_config.dataset != "mnist-sample" or data_config.data_dir:   # (the sample is embedded)
        stored["data_dir"] = str(resolve_data_dir(data_config.data_dir).expanduser().resolve())
    return stored


def data_config_of_run(stored: dict, data_dir: str | None = None, where: str = "config.json") -> DataConfig:
    """The :class:`DataConfig` a run's config.json describes (``data_dir`` overriding its own; its
    own is used while it exists, else the default directory is searched).
    Runs written before the grey levels of named datasets were k/256 (all but Frey Face) had k/255."""
    if not isinstance(stored, dict):
        raise AevbError(f"{where}: data must be a JSON object, got {stored!r}")
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    values = {key: value for key, value in stored.items() if key in fields}
    check_fields(DataConfig, values, f"{where}: data")
    if not isinstance(values.get("dataset"), str):
        raise AevbError(f"{where}: data names no dataset")
    if values.get("train_limit") is not None and values["train_limit"] < 1:
        raise AevbError(f"{where}: data.train_limit must be a positive integer, got {values['train_limit']}")
    if values.get("pixel_divisor") is not None and not (math.isfinite(values["pixel_divisor"])
                                                         and values["pixel_divisor"] > 0):
        raise AevbError(f"{where}: data.pixel_divisor must be a positive number, got {values['pixel_divisor']}")
    if "pixel_divisor" not in stored and stored.get("dataset") != "frey":
        values["pixel_divisor"] = USER_PIXEL_DIVISOR
    if data_dir:
        values["data_dir"] = data_dir
    elif values.get("data_dir") and not Path(values["data_dir"]).is_dir():
        values["data_dir"] = None   # moved or deleted: look where a new run would
    return DataConfig(**values)


def configuration_id(config: dict) -> str:
    """What identifies a run's settings in its checkpoints: a hash of the data (not where it is
    stored), model, training and algorithm sections of its config.json."""
    data = config.get("data")
    data = {key: value for key, value in data.items() if key not in ("data_dir", "download")} \
        if isinstance(data, dict) else data
    identity = {"data": data, "model": config.get("model"), "training": config.get("training"),
                "algorithm": config.get("algorithm")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_run_dir(dataset: str, latent_dim: int) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(dataset).stem}-z{latent_dim}-{stamp}"


class _TensorBoard:
    """Scalars for TensorBoard, written with torch's SummaryWriter (needs the tensorboard package)."""

    def __init__(self, directory: Path):
        self.writer = self.check_available()(str(directory))

    @staticmethod
    def check_available():
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AevbError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return SummaryWriter

    def log(self, metrics: Metrics) -> None:
        for key in ("train_bound", "valid_bound", "minibatch_bound", "samples_per_second"):
            value = getattr(metrics, key)
            if value is not None:
                self.writer.add_scalar(key, value, metrics.samples)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def train_run(out: str | os.PathLike, data_config: DataConfig, model_options: dict, train_config: TrainConfig,
              *, device: str = "auto", overwrite: bool = False, progress: bool = True,
              tensorboard: bool = False, data: Dataset | None = None, command: str | None = None,
              algorithm: str = "aevb", track_test: bool = False,
              extra_metrics: Callable[[VAE, Dataset], dict] | None = None,
              checkpoint_every: int | None = None) -> Path:
    """Train a VAE and write the whole run into ``out``; return the run directory.

    ``model_options`` are keyword arguments of :func:`model_config_for` (latent_dim, hidden_units,
    ...). ``data`` may be given to skip loading (it must be what ``data_config`` names).
    ``command`` is the command line recorded in config.json (default: this process's sys.argv).
    ``algorithm`` names the learning algorithm (``aevb``, or a baseline: ``wake-sleep``, ``mcem``);
    ``track_test`` adds the test bound to every metrics line; ``extra_metrics(model, data)`` returns
    more values for each metrics line (e.g. marginal-likelihood estimates for Fig. 3).
    """
    from .baselines import ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise AevbError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    torch_device = resolve_device(device)
    group = from_environment(torch_device)          # several processes under torchrun, else one
    torch_device = local_device(torch_device, group)
    check_distributable(group, algorithm, train_config.batch_size, extra_metrics is not None,
                        model_options.get("posterior", "gaussian"))
    if data is None:
        data = load_data(data_config)
    if algorithm == "full-vb":   # App. F: a Gaussian posterior over the decoder's parameters
        model_options = {**model_options, "decoder_posterior": "gaussian"}
    model_config = model_config_for(data, **model_options)
    if model_config.num_classes is not None and algorithm != "aevb":
        raise AevbError(f"--conditional trains with --algorithm aevb only, not {algorithm}")
    if (model_config.decoder_posterior == "gaussian") != (algorithm == "full-vb"):
        raise AevbError("a posterior over the decoder's parameters is trained by --algorithm full-vb only")
    check_data_fits_model(data, model_config, train_config)
    check_training(model_config, train_config.estimator, algorithm, train_config.engine)
    # As the Trainer will, but before the run directory is made, so that a refusal leaves no run behind.
    require_training_step_memory(model_config, train_config.batch_size,
                                 getattr(ALGORITHMS[algorithm](train_config), "num_samples", 1), torch_device,
                                 processes=group.world_size)
    train_config = fit_selection_to_budget(train_config, data.train.shape[0])
    if tensorboard:
        _TensorBoard.check_available()  # before anything is written into the run directory
    out = Path(out)
    with contextlib.ExitStack() as held:
        if group.is_main:   # only rank 0 writes; the others learn whether it could
            try:
                # Locked before anything is removed: --overwrite must not pull a run from under
                # a process still training it.
                if holds_run(out) and not overwrite:   # refused before the lock touches anything
                    prepare_run_dir(out, overwrite)
                held.enter_context(RunLock(create_run_dir(out)))
                out = prepare_run_dir(out, overwrite)
            except AevbError:
                group.all_agree(False, torch_device)
                raise
        if not group.all_agree(True, torch_device):
            raise AevbError(f"rank 0 could not prepare the run directory {out}")
        return _write_config_and_train(out, data, data_config, model_config, train_config, algorithm, group,
                                       torch_device, command, progress=progress, tensorboard=tensorboard,
                                       track_test=track_test, extra_metrics=extra_metrics,
                                       checkpoint_every=checkpoint_every)


def _write_config_and_train(out: Path, data: Dataset, data_config: DataConfig, model_config: ModelConfig,
                            train_config: TrainConfig, algorithm: str, group, torch_device: torch.device,
                            command: str | None, **training) -> Path:
    """Record the run's configuration in ``out``/config.json (rank 0), then train."""
    config = {
        "format_version": RUN_FORMAT_VERSION,
        "aevb_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": _stored_data_config(data_config) | {
            "name": data.name, "source": data.source, "pixel_divisor": data.pixel_divisor,
            "train_size": data.train.shape[0],
            "valid_size": data.valid.shape[0], "test_size": data.test.shape[0]},
        "model": model_config.to_dict(),
        "training": train_config.to_dict(),
        "algorithm": algorithm,
        "device": str(torch_device),
        "threads": torch.get_num_threads(),
        "processes": group.world_size,
    }
    if group.is_main:
        atomic_write_json(out / CONFIG_FILE, config)
    return _train_into(out, data, model_config, train_config, algorithm, group, torch_device,
                       configuration=configuration_id(config), **training)


def resume_run(run_dir: str | os.PathLike, *, device: str = "auto", progress: bool = True,
               tensorboard: bool = False, checkpoint_every: int | None = None,
               extra_metrics: Callable[[VAE, Dataset], dict] | None = None, track_test: bool = False) -> Path:
    """Continue the run in ``run_dir`` from its newest checkpoint, with the settings in its
    config.json, to the end it was asked for. On the same device and number of threads the run
    ends with the parameters, bit for bit, that it would have had uninterrupted."""
    from .baselines import ALGORITHMS

    out = Path(run_dir)
    config = read_run_config(out)
    if (out / SUMMARY_FILE).exists():
        raise AevbError(f"{out} is a finished run; nothing to resume")
    where = str(out / CONFIG_FILE)
    algorithm = config.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise AevbError(f"{where} names an unknown algorithm {algorithm!r}")
    data_config = data_config_of_run(config.get("data"), where=where)
    model_config, train_config = run_configs(config, where)
    torch_device = resolve_device(device)
    group = from_environment(torch_device)
    torch_device = local_device(torch_device, group)
    check_distributable(group, algorithm, train_config.batch_size, extra_metrics is not None,
                        model_config.posterior)
    with contextlib.ExitStack() as held:
        if group.is_main:
            held.enter_context(RunLock(out))
        identity = configuration_id(config)
        # Killed before its first checkpoint: start again, which is the same run (it is seeded).
        state = load_checkpoint(out, configuration=identity) if has_checkpoint(out) else None
        samples = state.samples if state is not None else 0
        data = load_data(data_config)
        if state is not None:
            check_checkpoint_fits(state, build_model(model_config), data.train.shape[0], out)
        if group.is_main:   # metrics after the checkpoint are measured again
            kept = [line for line in _metrics_lines(out) if _line_samples(line) <= samples]
            atomic_write_bytes(out / METRICS_FILE, "".join(kept).encode())
        return _train_into(out, data, model_config, train_config, algorithm, group, torch_device,
                           progress=progress, tensorboard=tensorboard, track_test=track_test,
                           extra_metrics=extra_metrics, checkpoint_every=checkpoint_every, resume=state,
                           configuration=identity)


def run_configs(config: dict, where: str) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configurations of a run's config.json, checked with the rules of a
    new run (one-line errors naming ``where`` and the setting)."""
    for section in ("model", "training"):
        if not isinstance(config.get(section), dict):
            raise AevbError(f"{where}: {section} must be a JSON object, got {config.get(section)!r}")
    return (ModelConfig.from_dict(config["model"], f"{where}: model"),
            TrainConfig.from_dict(config["training"], f"{where}: training"))


def _line_samples(line: str) -> float:
    """The samples count of a metrics line; a line cut off by a kill counts as after everything."""
    try:
        return json.loads(line)["samples"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _metrics_lines(out: Path) -> list[str]:
    try:
        lines = (out / METRICS_FILE).read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    return [line for line in lines if line.strip()]


class _StopOnSignal:
    """SIGINT and SIGTERM ask training to stop at the next step (after a checkpoint) instead of
    killing it; a second signal of the same kind is not caught (the user insists)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        self.received = number
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))

    def __call__(self) -> bool:
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class _AgreedStop:
    """A stop request under torchrun: every process must stop after the same step, so every
    ``every`` steps they agree (one all-reduce of a flag) whether any of them was signalled."""

    def __init__(self, local: Callable[[], bool], group, device: torch.device, every: int = 20):
        self.local, self.group, self.device, self.every, self.calls = local, group, device, every, 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls % self.every:
            return False
        return not self.group.all_agree(not self.local(), self.device)


def _train_into(out: Path, data: Dataset, model_config: ModelConfig, train_config: TrainConfig, algorithm: str,
                group, torch_device: torch.device, *, progress: bool, tensorboard: bool, track_test: bool,
                extra_metrics, checkpoint_every: int | None, resume=None, configuration: str | None = None) -> Path:
    """Train (or continue training) in the prepared run directory ``out``, checkpointing as it goes
    (every ``checkpoint_every`` steps, default :data:`DEFAULT_CHECKPOINT_EVERY`, and at every
    evaluation point); then write the model, figures and summary."""
    from .baselines import ALGORITHMS

    if checkpoint_every is None:
        checkpoint_every = DEFAULT_CHECKPOINT_EVERY

    data = data.to(torch_device)
    model = build_model(model_config).to(torch_device)
    # A conditional model's datapoints are rows [x, one-hot(y)]: labels travel with their images.
    train, valid, test = (model_inputs(getattr(data, split), getattr(data, f"{split}_labels"), model_config)
                          for split in ("train", "valid", "test"))
    trainer = Trainer(model, train, train_config, valid=valid if valid.shape[0] else None,
                      test=test if track_test else None, algorithm=ALGORITHMS[algorithm](train_config), group=group)
    checkpoint = (lambda state: save_checkpoint(out, state, configuration=configuration)) if group.is_main else None
    with _StopOnSignal() as signalled:
        stop = signalled if group.world_size == 1 else _AgreedStop(signalled, group, torch_device)
        if not group.is_main:   # the other processes train in step with rank 0 and write nothing
            trainer.fit(progress=False, resume=resume, stop_requested=stop)
            group.all_agree(True, torch_device)   # wait for rank 0 to finish writing
            return out
        board = _TensorBoard(out / "tensorboard") if tensorboard else None
        started = time.perf_counter()
        with open(out / METRICS_FILE, "a") as metrics_file:
            def record(metrics: Metrics) -> None:
                line = metrics.to_dict() | (extra_metrics(model, data) if extra_metrics is not None else {})
                try:
                    metrics_file.write(json.dumps(_strict_json(line)) + "\n")
                    metrics_file.flush()
                    os.fsync(metrics_file.fileno())
                except OSError as error:   # a full disk names no file by itself
                    raise named_os_error(error, out / METRICS_FILE) from None
                if board is not None:
                    board.log(metrics)

            try:
                result = trainer.fit(on_metrics=record, progress=progress, on_checkpoint=checkpoint,
                                     checkpoint_every=checkpoint_every, resume=resume, stop_requested=stop)
            except TrainingInterrupted as interrupted:
                interrupted.signal = signalled.received
                raise
            finally:
                if board is not None:
                    board.close()
    save_model(model, out)
    write_figures(out, model, data, train_config.binarize, result.history)
    last = result.history[-1]
    run_summary = getattr(trainer.algorithm, "run_summary", None)   # full VB: its KL term and full bound
    # summary.json comes last: it marks the run finished (resume refuses a finished run).
    atomic_write_json(out / SUMMARY_FILE, _strict_json({
        "step_size": result.step_size,
        "step_size_trials": [dataclasses.asdict(t) for t in result.step_size_trials],
        "samples": last.samples, "epochs": last.epoch, "train_bound": last.train_bound,
        "valid_bound": last.valid_bound, "test_bound": last.test_bound, "training_seconds": last.seconds,
        "samples_per_second": last.samples_per_second,
        "engine": getattr(trainer.algorithm, "engine_used", None),   # how gradients were computed
        "wall_seconds": time.perf_counter() - started,
    } | (run_summary(model, last.train_bound) if run_summary is not None else {})))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)   # the run is complete: its model is the result
    group.all_agree(True, torch_device)
    return out


def _strict_json(value):
    """NaN and ±inf (e.g. the bound of an algorithm that has none) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_figures(out: Path, model: VAE, data: Dataset, binarize: str, history: list[Metrics]) -> None:
    """The run's PNGs: samples, reconstructions, the bound curve and, for J = 2, the manifold."""
    title = f"{data.name}, Nz = {model.config.latent_dim}"
    save_bound_curve([m.to_dict() for m in history], out / "bound.png", title)
    shape = data.image_shape
    if shape is None:
        return
    generator = torch.Generator(device="cpu").manual_seed(0)
    if model.config.num_classes is not None:   # one row per class, the same z down each column
        save_samples(model.class_grid(10, generator=generator).cpu(), shape, out / "samples.png",
                     columns=10, title=f"class-conditional samples (row = class), {title}")
    else:
        save_samples(model.sample(100, generator=generator).cpu(), shape, out / "samples.png",
                     title=f"samples, {title}")
    shown = "valid" if data.valid.shape[0] else "test"   # a run trained on train + valid shows test images
    labels = getattr(data, f"{shown}_labels")
    inputs = evaluation_data(model_inputs(getattr(data, shown)[:50], None if labels is None else labels[:50],
                                          model.config), binarize)
    save_reconstructions(inputs[:, : model.config.data_dim], model.reconstruct(inputs), shape,
                         out / "reconstructions.png")
    icdf = prior_icdf(model.prior()) if model.config.prior != "gaussian" else None
    if (model.config.latent_dim == 2 and model.config.num_classes is None
            and (model.config.prior == "gaussian" or icdf is not None)):
        # A non-Gaussian prior maps the grid through its own inverse CDF (none: no manifold figure).
        save_manifold(model.decoder.mean, shape, out / "manifold.png", device=inputs.device, icdf=icdf)


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, with one-line errors for a missing run or another run format."""
    if not run_dir.is_dir():
        raise AevbError(f"run directory {run_dir} not found")
    config = read_json(run_dir / CONFIG_FILE)
    check_format_version(config, RUN_FORMAT_VERSION, run_dir / CONFIG_FILE)
    return config


def load_run(run_dir: str | os.PathLike, device: str = "auto") -> tuple[VAE, dict]:
    """The trained model of a run and its configuration."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if not (run_dir / "model.safetensors").exists():
        raise AevbError(f"{run_dir} holds no trained model (model.safetensors); did the run finish?")
    return load_model(run_dir, resolve_device(device)), config


def evaluate_run(run_dir: str | os.PathLike, *, split: str = "test", num_samples: int = 100,
                 data_dir: str | None = None, device: str = "auto", batch_size: int = 20_000,
                 num_points: int | None = None, log_likelihood_samples: int | None = None, prior_mixture: float = 0.0,
                 hmc: bool = False, hmc_samples: int = PAPER_POSTERIOR_SAMPLES,
                 leapfrog_steps: int = PAPER_LEAPFROG_STEPS, seed: int = 0, parameter_draws: int = 10) -> dict:
    """Evaluate a trained run on a data split; every number is in nats per datapoint.

    Always: the lower bound with ``num_samples`` samples of z per datapoint (``{split}_bound``,
    ``{split}_bound_stderr``, the standard error over datapoints). With
    ``log_likelihood_samples=k``: the importance-sampled log p(x) (``log_likelihood``,
    ``log_likelihood_stderr``: Monte Carlo standard error of the mean). With ``hmc``: the
    Appendix D estimate (``hmc_log_likelihood``, ...). ``num_points`` keeps the first N points.

    A full-VB run (App. F) averages over q(θ): the bound is E_q(θ)[𝓛_θ(x)] (a fresh θ per batch of
    points), log p(x) the predictive log E_q(θ)[p_θ(x)] from ``parameter_draws`` draws of θ with k
    importance samples each (:func:`aevb.full_vb.predictive_log_likelihood`); the result adds
    KL(q(θ) ‖ p(θ)) and, on the training split, the full bound 𝓛(φ; X)/N.
    """
    if num_samples < 1:
        raise AevbError(f"--samples must be a positive integer, got {num_samples}")
    for name, value in (("--k", log_likelihood_samples), ("--num-points", num_points),
                        ("--parameter-draws", parameter_draws),
                        ("--hmc-samples", hmc_samples), ("--leapfrog-steps", leapfrog_steps)):
        if value is not None and value < 1:
            raise AevbError(f"{name} must be a positive integer, got {value}")
    if split not in ("train", "valid", "test"):
        raise AevbError(f"unknown split {split!r}; choose train, valid or test")
    model, config = load_run(run_dir, device)
    where = str(Path(run_dir) / CONFIG_FILE)
    data_config = config.get("data")
    if not isinstance(config.get("training"), dict):
        raise AevbError(f"{where} lacks the training configuration")
    train_config = TrainConfig.from_dict(config["training"], f"{where}: training")
    data = load_data(data_config_of_run(data_config, data_dir, where))
    if getattr(data, split).shape[0] == 0:
        merged = " (the run trained on train + valid)" if data_config.get("merge_valid") else ""
        raise AevbError(f"{data.name} has no {split} split{merged}; evaluate another split")
    device_of_model = next(model.parameters()).device
    if getattr(data, split).shape[1] != model.config.data_dim:
        raise AevbError(f"{data.name} has {getattr(data, split).shape[1]} dimensions but the model expects "
                        f"{model.config.data_dim}")
    if hmc and model.config.num_classes is not None:
        raise AevbError("--hmc does not handle conditional models; use --nll")
    full_vb = isinstance(model, FullVBVAE)
    if full_vb and hmc:   # (checked before any work is done)
        raise AevbError("--hmc estimates log p(x) at one θ; a full-VB run has a posterior over θ (use --nll)")
    # For a conditional model: rows [x, one-hot(y)], binarised as the trainer binarises them.
    values = model_inputs(getattr(data, split), getattr(data, f"{split}_labels"), model.config)
    values = evaluation_data(values, train_config.binarize)[:num_points]
    values = values.to(device_of_model)
    torch.manual_seed(seed)
    started = time.perf_counter()
    estimator = bound_estimator(train_config.estimator)
    estimate = evaluate_bound(model, values, estimator=estimator, num_samples=num_samples, batch_size=batch_size)
    result = {
        f"{split}_bound": estimate.mean,
        f"{split}_bound_stderr": estimate.stderr,
        "split": split,
        "num_datapoints": estimate.num_datapoints,
        "samples_per_datapoint": num_samples,
        "estimator": estimator,
        "dataset": data.name,
        "seconds": time.perf_counter() - started,
    }
    if model.config.num_classes is not None:   # every number is of log p(x|y), y the datapoint's label
        result["conditional"] = True
    if full_vb:
        with torch.no_grad():
            kl = model.decoder_parameter_kl(train_config.prior_precision).item()
        result.update(decoder_parameter_kl=kl, decoder_parameter_kl_per_datapoint=kl / data.train.shape[0])
        if split == "train":
            result["train_full_bound"] = estimate.mean - kl / data.train.shape[0]
    if log_likelihood_samples is not None:
        if full_vb:
            nll = predictive_log_likelihood(model, values, num_samples=log_likelihood_samples,
                                            parameter_draws=parameter_draws, prior_mixture=prior_mixture)
            result["parameter_draws"] = parameter_draws
        else:
            nll = estimate_log_likelihood(model, values, num_samples=log_likelihood_samples,
                                          prior_mixture=prior_mixture)
        result.update(log_likelihood=nll.mean, log_likelihood_stderr=nll.stderr, log_likelihood_prior_mixture=prior_mixture,
                      log_likelihood_spread_stderr=nll.spread_stderr, log_likelihood_samples=log_likelihood_samples,
                      log_likelihood_seconds=nll.seconds,
                      decoder_evaluations_per_second=values.shape[0] * nll.num_samples / nll.seconds)
    if hmc:
        generator = torch.Generator().manual_seed(seed)
        hmc_estimate, acceptance = hmc_log_likelihood(model, values, num_samples=hmc_samples,
                                                      leapfrog_steps=leapfrog_steps, generator=generator)
        result.update(hmc_log_likelihood=hmc_estimate.mean, hmc_log_likelihood_stderr=hmc_estimate.stderr,
                      hmc_log_likelihood_spread_stderr=hmc_estimate.spread_stderr, hmc_samples=hmc_samples,
                      hmc_leapfrog_steps=leapfrog_steps, hmc_acceptance=acceptance, hmc_seconds=hmc_estimate.seconds)
    return result


def sample_run(run_dir: str | os.PathLike, *, num_samples: int = 100, seed: int = 0, out: str | None = None,
               device: str = "auto", label: int | None = None) -> Path:
    """Draw ``num_samples`` images E[x|z], z ~ p(z), from a run; write a PNG grid (and .npy).

    A conditional run draws E[x|z, y]: all of class ``label`` when given; otherwise the
    class-conditional grid, one row per class and ⌈num_samples / C⌉ columns, each column one z.
    A full-VB run decodes with θ = μ_θ, the mean of q(θ).
    """
    if num_samples < 1:
        raise AevbError(f"--num must be a positive integer, got {num_samples}")
    target = Path(out) if out else Path(run_dir) / f"samples-seed{seed}.png"
    if target.suffix.lower() not in (".png", ".npy"):
        raise AevbError(f"--out {target}: unsupported file type {target.suffix or '(none)'!r}; use .png or .npy")
    model, _ = load_run(run_dir, device)
    generator = torch.Generator().manual_seed(seed)
    classes = model.config.num_classes
    columns = min(10, num_samples)
    # Before anything is drawn: all the images are decoded at once, so too many cannot be streamed.
    require_sampling_memory(model.config, num_samples, class_grid=classes is not None and label is None,
                            png=target.suffix.lower() == ".png", device=next(model.parameters()).device)
    if classes is None:
        if label is not None:
            raise AevbError("--label needs a conditional run (aevb train --conditional)")
        images = model.sample(num_samples, generator=generator).cpu()
    elif label is None:
        columns = -(-num_samples // classes)
        images = model.class_grid(columns, generator=generator).cpu()
    else:
        if not 0 <= label < classes:
            raise AevbError(f"--label {label} is outside the run's classes 0..{classes - 1}")
        images = model.sample(num_samples, generator=generator, labels=torch.full((num_samples,), label)).cpu()
    if target.suffix.lower() == ".npy":
        import numpy as np

        with open(target, "wb") as stream:  # a file object: np.save adds no second suffix to .NPY
            np.save(stream, images.numpy())
        return target
    if model.config.image_shape is None:
        raise AevbError("the model's data have no image shape; write samples to a .npy file with --out FILE.npy")
    what = ("one row per class" if label is None else f"class {label}") if classes is not None else "samples"
    save_samples(images, model.config.image_shape, target, columns=columns,
                 title=f"{images.shape[0]} {'samples, ' if classes is not None else ''}{what}, seed {seed}")
    return target
