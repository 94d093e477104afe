"""A run is a directory: everything needed to inspect, evaluate, sample from and rerun a training.

Layout of ``RUN_DIR``::

    config.json          full configuration (data, model, training, device), written first
    metrics.jsonl        one JSON object per evaluation point (see aevb.training.Metrics)
    model.safetensors    weights (no pickle) ...
    model.json           ... and the model configuration to rebuild it
    summary.json         final numbers: chosen step size, bounds, wall time, throughput
    evaluations.jsonl    one JSON object per evaluation after training (aevb evaluate), kept as measured
    samples.png          samples E[x|z], z ~ p(z) (Figs. 7–11)
    reconstructions.png  validation images above their reconstructions
    bound.png            bound against training samples (Fig. 2)
    manifold.png         for a 2-D latent space, the learned manifold (Figs. 4–5)
    checkpoints/         while training (aevb.training.checkpoints); removed when the run finishes
    tensorboard/         TensorBoard scalars, when asked for
    .lock                held by the process training the run (aevb.runs.lock)

One module per concern:

* :mod:`~aevb.runs.layout` ........ the directory's files, claiming one, a run's identity
* :mod:`~aevb.runs.data_config` ... which data a run uses, as config.json records it
* :mod:`~aevb.runs.spec` .......... a run's typed specification: data, model, training, algorithm, run options
* :mod:`~aevb.runs.train` ......... train a new run: its spec checked before anything is written
* :mod:`~aevb.runs.resume` ........ resume a run from its newest checkpoint
* :mod:`~aevb.runs.fit` ........... train in a run's directory: checkpoints, metrics, model, summary
* :mod:`~aevb.runs.process` ....... stopping on a signal, agreed across processes
* :mod:`~aevb.runs.lock` .......... one process at a time in a run
* :mod:`~aevb.runs.outputs` ....... figures and TensorBoard scalars
* :mod:`~aevb.runs.evaluate` ...... bound and log-likelihood of a trained run
* :mod:`~aevb.runs.evaluations` ... what was measured on a run after training, kept in it
* :mod:`~aevb.runs.sample` ........ samples from a trained run
* :mod:`~aevb.runs.export` ........ a run's model out: a Hugging Face directory, an ONNX or TorchScript graph
* :mod:`~aevb.runs.saved_model` ... a saved model's directory read as a run is, and the run's record it keeps

``train_run`` never writes into a directory that already holds a run unless told to overwrite.
"""

from .compare import compare_runs
from .data_config import DataConfig, data_config_of_run, load_data
from .evaluate import evaluate_run
from .export import export_run
from .layout import (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FORMAT_VERSION,
    SUMMARY_FILE,
    default_run_dir,
    prepare_run_dir,
    read_run_config,
)
from .loading import load, load_run
from .resume import resume_run, run_configs
from .sample import sample_run
from .spec import DEFAULT_CHECKPOINT_EVERY, ModelSpec, RunOptions, RunSpec, resolve_device
from .train import plan_run, resolved_config, train_run

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_CHECKPOINT_EVERY",
    "METRICS_FILE",
    "RUN_FORMAT_VERSION",
    "SUMMARY_FILE",
    "DataConfig",
    "ModelSpec",
    "RunOptions",
    "RunSpec",
    "compare_runs",
    "data_config_of_run",
    "default_run_dir",
    "evaluate_run",
    "export_run",
    "load",
    "load_data",
    "load_run",
    "plan_run",
    "prepare_run_dir",
    "read_run_config",
    "resolve_device",
    "resolved_config",
    "resume_run",
    "run_configs",
    "sample_run",
    "train_run",
]
