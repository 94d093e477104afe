"""What some settings may be and default to, in a module that imports no torch.

The command line's help quotes them (``aevb train --help``), and help must not wait seconds for
torch. Each registry below lives in a module that imports torch and is keyed by exactly these names
(tests/test_cli_startup.py checks it); the settings whose dataclasses are themselves torch-free
(:class:`aevb.training.config.TrainConfig`, :class:`aevb.models.config.ModelConfig`) keep their
defaults on their fields.
"""

#: ``engine``: pick the fastest engine that serves the model (:func:`aevb.engines.engine_class`).
AUTO_ENGINE = "auto"

#: ``engine``: the engines of :data:`aevb.engines.ENGINES`, fastest first.
ENGINE_NAMES = ("native", "fused", "autograd")

#: ``posterior`` and ``prior``: the families of :data:`aevb.models.families.FAMILIES` (§2.4).
FAMILY_NAMES = (
    "gaussian",
    "full-covariance-gaussian",
    "laplace",
    "student-t",
    "multivariate-student-t",
    "uniform",
    "triangular",
    "logistic",
    "cauchy",
    "gumbel",
    "exponential",
    "rayleigh",
    "pareto",
    "weibull",
    "reciprocal",
    "gompertz",
    "erlang",
    "log-normal",
    "gamma",
    "chi-squared",
    "f",
    "beta",
    "dirichlet",
)

#: ``loggers``: the experiment trackers of :data:`aevb.runs.loggers.LOGGERS`.
LOGGER_NAMES = ("tensorboard", "wandb", "mlflow")

#: The formats of a configuration file that ``--config`` reads and ``--print-config`` writes
#: (:mod:`aevb.runs.config_file`).
CONFIG_FORMATS = ("json", "yaml")

#: ``dataset`` of :class:`aevb.runs.DataConfig` when none is named: embedded, so it works offline.
DEFAULT_DATASET = "mnist-sample"

#: ``checkpoint_every`` of :class:`aevb.runs.RunOptions`: training steps between checkpoints.
DEFAULT_CHECKPOINT_EVERY = 2000

#: ``split_seed`` of user data (a folder, a .npy file, an .npz file without valid/test, data given to
#: train_run) when none is set: the seed of the permutation that holds out valid and test
#: (:func:`aevb.data.splits.permutation_split`).
USER_SPLIT_SEED = 0

#: ``optimizer`` of :class:`aevb.training.TrainConfig`: the optimisers of
#: :data:`aevb.training.optimizers.OPTIMIZERS`.
OPTIMIZER_NAMES = ("adagrad", "adagrad-warmup", "adam", "adam-iwae-code")

#: ``minibatches`` of :class:`aevb.training.TrainConfig`: how Algorithm 1's "random minibatch" is
#: drawn — M rows with replacement every step (the authors' code), or epochs of a fresh permutation.
MINIBATCH_ORDERS = ("with-replacement", "shuffled")
