"""Experiment trackers a run can report its metrics to, besides its own metrics.jsonl: TensorBoard,
Weights & Biases, MLflow. Each is an optional extra (``pip install 'aevb[wandb]'``), checked
before anything is written; each gets every evaluation point's metrics (nats per datapoint,
stepped by training samples), the sample and reconstruction grids of the model at that point
(:mod:`aevb.runs.tracker_images`; for image data), and the run's configuration as its
hyperparameters (:func:`~aevb.runs.layout.flat_config`'s ``section.name`` keys).

A tracker of another kind needs none of this: ``train_run(on_metrics=...)`` and
``Trainer.fit(on_metrics=...)`` call any function with each :class:`~aevb.training.Metrics`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import AevbError
from ..training import Metrics
from .layout import flat_config

#: The metrics every tracker gets (the others stay in metrics.jsonl).
LOGGED = ("train_bound", "valid_bound", "test_bound", "minibatch_bound", "samples_per_second", "step_size")


class MetricsLogger:
    """A tracker: ``name`` (the ``--logger`` value), ``package`` it imports, ``extra`` that installs
    it; ``takes_images`` if it shows images (:meth:`log_images`; the grids are drawn only for a
    tracker that does)."""

    name: ClassVar[str]
    package: ClassVar[str]
    extra: ClassVar[str]
    takes_images: ClassVar[bool] = False

    @classmethod
    def check_available(cls):
        """The tracker's module, or a one-line AevbError saying how to install it."""
        import importlib

        try:
            return importlib.import_module(cls.package)
        except ImportError:
            raise AevbError(
                f"`loggers` {cls.name} needs the {cls.extra} package: pip install 'aevb[{cls.extra}]' "
                f"(or pip install {cls.extra})"
            ) from None

    def __init__(self, run_dir: Path, config: dict):
        raise NotImplementedError

    def log(self, metrics: Metrics) -> None:
        raise NotImplementedError

    def log_images(self, images: dict[str, np.ndarray], samples: int) -> None:
        """Show ``images`` (name → 8-bit image (H, W, C), C = 1 for grey) at ``samples`` training
        samples, right after that evaluation point's :meth:`log`."""

    def close(self, completed: bool = True) -> None:
        """Flush and finish, ``completed`` if training ended normally (not interrupted, diverged or
        failed); what was logged stays either way."""


def _values(metrics: Metrics) -> dict[str, float]:
    return {key: value for key in LOGGED if (value := getattr(metrics, key, None)) is not None}


def hyperparameters(config: dict) -> dict[str, int | float | str]:
    """A run's config.json as ``section.name`` → a value every tracker takes: numbers and strings
    as they are, anything else (booleans, None, lists) as its JSON text, the same in every tracker
    (TensorBoard would show a boolean as the number 1)."""
    return {
        key: value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else json.dumps(value)
        for key, value in flat_config(config).items()
    }


def _grey_as_plane(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) as (H, W), the shape image libraries read as grey; colour images unchanged."""
    return image[..., 0] if image.shape[-1] == 1 else image


class TensorBoardLogger(MetricsLogger):
    """Scalars and images in RUN_DIR/tensorboard, written with torch's SummaryWriter
    (``tensorboard --logdir``), and the hyperparameters for TensorBoard's HPARAMS tab, whose
    metric columns are the last values of the scalars."""

    name, package, extra = "tensorboard", "tensorboard", "tensorboard"
    takes_images = True

    def __init__(self, run_dir: Path, config: dict):
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        # Written into the scalars' own event file (SummaryWriter.add_hparams would open another
        # run directory with copies of the metrics); the session's end is written at close.
        experiment, session_start, self.session_end = hparams(hyperparameters(config), dict.fromkeys(LOGGED, 0.0))
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)

    def log(self, metrics: Metrics) -> None:
        for key, value in _values(metrics).items():
            self.writer.add_scalar(key, value, metrics.samples)
        self.writer.flush()

    def log_images(self, images: dict[str, np.ndarray], samples: int) -> None:
        for key, image in images.items():
            self.writer.add_image(key, image, samples, dataformats="HWC")
        self.writer.flush()

    def close(self, completed: bool = True) -> None:
        if completed:  # (the only status torch writes is success: a run that did not complete stays open)
            self.writer.file_writer.add_summary(self.session_end)
        self.writer.close()


class WandbLogger(MetricsLogger):
    """A Weights & Biases run named after the run directory, with the configuration (config.json's
    sections) as its config, its files under RUN_DIR/wandb; offline with ``WANDB_MODE=offline``
    (then ``wandb sync``), the project from ``WANDB_PROJECT`` (else aevb)."""

    name, package, extra = "wandb", "wandb", "wandb"
    takes_images = True

    def __init__(self, run_dir: Path, config: dict):
        self.wandb = self.check_available()
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "aevb"),
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            reinit=True,
        )

    def log(self, metrics: Metrics) -> None:
        self.run.log(_values(metrics), step=metrics.samples)

    def log_images(self, images: dict[str, np.ndarray], samples: int) -> None:
        self.run.log({key: self.wandb.Image(_grey_as_plane(image)) for key, image in images.items()}, step=samples)

    def close(self, completed: bool = True) -> None:
        self.run.finish(exit_code=0 if completed else 1)  # W&B marks a non-zero exit failed


class MlflowLogger(MetricsLogger):
    """An MLflow run named after the run directory, with the configuration as parameters and the
    images as stepped image series, in the
    experiment ``MLFLOW_EXPERIMENT_NAME`` (else aevb); tracked where ``MLFLOW_TRACKING_URI`` says,
    else in a local SQLite store RUN_DIR/mlflow.db (``mlflow ui --backend-store-uri sqlite:///...``;
    MLflow's plain-file store is deprecated)."""

    name, package, extra = "mlflow", "mlflow", "mlflow"
    takes_images = True
    STORE = "mlflow.db"

    def __init__(self, run_dir: Path, config: dict):
        mlflow = self.check_available()
        self.mlflow = mlflow
        mlflow.set_tracking_uri(
            os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / self.STORE).resolve()}"
        )
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "aevb")
        experiment = mlflow.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else mlflow.create_experiment(
                experiment_name, artifact_location=(run_dir / "mlartifacts").resolve().as_uri()
            )
        )
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_dir.name)
        mlflow.log_params({key: str(value)[:500] for key, value in hyperparameters(config).items()})

    def log(self, metrics: Metrics) -> None:
        self.mlflow.log_metrics(_values(metrics), step=metrics.samples)

    def log_images(self, images: dict[str, np.ndarray], samples: int) -> None:
        for key, image in images.items():  # a series per key, stepped like the metrics (MLflow ≥ 2.12)
            self.mlflow.log_image(_grey_as_plane(image), key=key, step=samples)

    def close(self, completed: bool = True) -> None:
        self.mlflow.end_run(status="FINISHED" if completed else "KILLED")


#: Trackers by their ``logger`` names.
LOGGERS: dict[str, type[MetricsLogger]] = {cls.name: cls for cls in (TensorBoardLogger, WandbLogger, MlflowLogger)}
