"""The ``aevb`` command: train, evaluate and sample from variational auto-encoders.

Every user error ends in one line on stderr, ``aevb <command>: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shlex
import signal
import sys
import warnings

from . import __version__
from .engines import ENGINE_CHOICES
from .errors import AevbError, TrainingDiverged, TrainingInterrupted
from .models.families import FAMILIES, check_pair, default_estimator

FAMILY_NAMES = tuple(FAMILIES)

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    """A positive count; accepts 1000000, 1_000_000 and 1e6."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(value)


def _number(minimum: float, inclusive: bool):
    """An argparse type for a finite float above (or at, when ``inclusive``) ``minimum``."""
    wanted = f"a number {'>=' if inclusive else '>'} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the system reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _threads(text: str) -> int:
    """A thread count up to the CPUs available: far more threads than CPUs only slows training
    down, and tens of thousands exhaust the process (torch segfaults at 100000)."""
    value = _count(text)
    cpus = available_cpus()
    if value > cpus:
        raise argparse.ArgumentTypeError(f"expected at most {cpus} (the CPUs available to aevb), got {text!r}")
    return value


def _counts(text: str) -> int | tuple[int, ...]:
    """One positive count, or several separated by commas (one per layer): 500 or 500,200."""
    if "," not in text:
        return _count(text)
    return tuple(_count(part) for part in text.split(","))


def _label(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class label 0, 1, ..., got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a class label 0, 1, ..., got {text!r}")
    return value


_positive_float = _number(0.0, inclusive=False)
_non_negative_float = _number(0.0, inclusive=True)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text.lower():
            return help_text
        return super()._get_help_string(action)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="directory holding the data files (default: $AEVB_DATA_DIR, else the cache "
                             "directory ~/.cache/aevb)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


#: An option of ``aevb train`` the user did not give is absent from the parsed arguments, so that
#: the library's default applies (one default per setting, owned by the library); the help
#: quotes it from there.
UNSET = argparse.SUPPRESS


def _default(config: type, name: str):
    """The library's default of setting ``name`` of the dataclass ``config``."""
    import dataclasses

    field = next(field for field in dataclasses.fields(config) if field.name == name)
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _add_train_options(train: argparse.ArgumentParser) -> None:
    from .models.vae import ModelConfig
    from .runs import DataConfig
    from .runs.train import DEFAULT_CHECKPOINT_EVERY
    from .training import DEFAULT_MAX_SAMPLES, TrainConfig

    def t(name: str):
        return _default(TrainConfig, name)

    def m(name: str):
        return _default(ModelConfig, name)

    data = train.add_argument_group("data")
    data.add_argument("--dataset", default=UNSET,
                      help="mnist-sample (embedded, offline), mnist, binarized-mnist, frey, or a path to "
                           f"a .npy/.npz file (default: {_default(DataConfig, 'dataset')})")
    data.add_argument("--data-dir", metavar="DIR", default=UNSET,
                      help="directory holding the data files (default: $AEVB_DATA_DIR, else the cache "
                           "directory ~/.cache/aevb)")
    data.add_argument("--device", default=UNSET, help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    data.add_argument("--download", action="store_true", default=UNSET,
                      help="download missing data files into the data directory (checksums verified) (default: off)")
    data.add_argument("--pixel-divisor", type=_number(255.0, inclusive=True), default=UNSET,
                      help="grey levels k become k / this (default: 256 for mnist, mnist-sample and frey, as in "
                           "the authors' mnist.pkl.gz; 255 for your files)")
    data.add_argument("--merge-valid", action="store_true", default=UNSET,
                      help="train on the training and validation splits together (MNIST: all 60,000 images), "
                           "with no validation split (default: off)")
    data.add_argument("--binarize", choices=("none", "dynamic"), default=UNSET,
                      help=f"dynamic: a fresh Bernoulli draw of each image every time it is used (default: "
                           f"{t('binarize')})")

    model = train.add_argument_group("model (paper §3, App. C)")
    model.add_argument("--latent-dim", type=_count, default=UNSET, help=f"Nz, dimension of z (default: {m('latent_dim')})")
    model.add_argument("--hidden-units", type=_counts, default=UNSET,
                       help=f"units per hidden layer (default: {m('hidden_units')}; 200 for frey, as in §5), or one "
                            "width per layer from the data side, e.g. 500,200 (the decoder mirrors them)")
    model.add_argument("--hidden-layers", type=int, default=UNSET,
                       help=f"hidden layers in encoder and decoder (default: {m('hidden_layers')}, or as many as "
                            "--hidden-units lists)")
    model.add_argument("--architecture", choices=("mlp", "conv"), default=UNSET,
                       help="mlp (App. C) or conv: stride-2 convolutions on the images (--conv-channels), then "
                            "the hidden layers; the decoder mirrors them with transposed convolutions "
                            f"(default: {m('architecture')})")
    model.add_argument("--conv-channels", type=_counts, default=UNSET, metavar="C1,C2,...",
                       help="channels of each stride-2 convolution of --architecture conv (default: "
                            f"{','.join(map(str, m('conv_channels')))})")
    model.add_argument("--conditional", action="store_true", default=UNSET,
                       help="conditional VAE p(x|z,y), q(z|x,y) on the data's class labels y (one-hot inputs) (default: off)")
    model.add_argument("--activation", default=UNSET,
                       help=f"tanh, relu, softplus, elu or sigmoid (default: {m('activation')})")
    model.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=UNSET,
                       help="decoder (default: bernoulli for data in [0,1]; gaussian for frey and other data)")
    model.add_argument("--sigmoid-mean", action=argparse.BooleanOptionalAction, default=UNSET,
                       help="Gaussian decoder mean through a sigmoid (default: on for frey)")
    model.add_argument("--decoder-variance", choices=("network", "per-dimension"), default=UNSET,
                       help="Gaussian decoder: log σ² output by the network (App. C.2), or a learned "
                            f"per-dimension vector independent of z (default: {m('decoder_variance')})")
    model.add_argument("--posterior", choices=FAMILY_NAMES, default=UNSET, metavar="FAMILY",
                       help="approximate posterior q(z|x), a reparameterisable family of §2.4: "
                            + ", ".join(FAMILY_NAMES) + f" (default: {m('posterior')}, N(μ, diag σ²))")
    model.add_argument("--prior", choices=FAMILY_NAMES, default=UNSET, metavar="FAMILY",
                       help="prior p(z): the standard member of a family on the posterior's support, e.g. "
                            f"laplace = Laplace(0, 1)^J (default: {m('prior')}, N(0, I))")
    model.add_argument("--init", choices=("normal", "glorot"), default=UNSET,
                       help="normal: every parameter from N(0, σ²) (§5); glorot: Glorot-uniform weights, zero "
                            "biases, a Bernoulli decoder's output bias at the logit of the mean training image "
                            f"(Burda et al.'s code) (default: {m('init')})")
    model.add_argument("--init-std", type=_positive_float, default=UNSET,
                       help=f"σ of the normal initialisation (default: {m('init_std')}, reading §5's N(0, 0.01) as a "
                            "variance; see docs/results.md)")
    model.add_argument("--log-variance-bound", type=_non_negative_float, default=UNSET, metavar="B",
                       help="bound every log σ² (encoder, Gaussian decoder) smoothly to (-B, B) as B·tanh(raw/B), "
                            "part of the model, so no variance overflows or vanishes; 0: unbounded, the paper's "
                            f"exact parameterisation (default: {m('log_variance_bound'):g})")
    model.add_argument("--posterior-init-std", type=_positive_float, default=UNSET, dest="decoder_posterior_init_std",
                       help="full-vb: σ of the posterior over the decoder's parameters at initialisation "
                            f"(default: {m('decoder_posterior_init_std')}; the means start as the MAP model's weights)")

    algorithm = train.add_argument_group("training (Algorithm 1, §5)")
    algorithm.add_argument("--algorithm", choices=("aevb", "wake-sleep", "mcem", "full-vb"), default=UNSET,
                           help="learning algorithm: AEVB (Algorithm 1), a baseline of §5 — wake-sleep, or "
                                "Monte Carlo EM with HMC (App. E; needs --step-size, reports no bound) — or full-vb: "
                                "full variational Bayes, a Gaussian posterior over the decoder's parameters with "
                                "the N(0, I/--prior-precision) prior as its KL term (App. F) (default: aevb)")
    algorithm.add_argument("--estimator", type=str.upper, choices=("A", "B", "IWAE"), default=UNSET,
                           help="SGVB estimator A or B (§2.3), or IWAE, the importance-weighted bound of Burda et "
                                "al. (2015) with k = --samples-per-datapoint (A at k = 1) (default: "
                                f"{t('estimator')}, the paper's; A when the --posterior/--prior pair has no "
                                "closed-form KL)")
    algorithm.add_argument("--batch-size", type=_count, default=UNSET,
                           help=f"minibatch size M (default: {t('batch_size')})")
    algorithm.add_argument("--samples-per-datapoint", type=_count, default=UNSET, dest="num_samples",
                           help=f"L, samples of z per datapoint (default: {t('num_samples')})")
    algorithm.add_argument("--optimizer", choices=("adagrad", "adam"), default=UNSET,
                           help=f"optimiser (default: {t('optimizer')})")
    algorithm.add_argument("--optimizer-eps", type=_positive_float, default=UNSET,
                           help="the optimiser's ε (default: torch's, 1e-10 for Adagrad and 1e-8 for Adam)")
    algorithm.add_argument("--schedule", choices=("constant", "iwae"), default=UNSET,
                           help="step size over the run: constant (§5), or iwae: Burda et al.'s eight stages of "
                                "3^i passes at step size × 10^(-i/7), stretched over the run "
                                f"(default: {t('schedule')})")
    algorithm.add_argument("--step-size", type=_positive_float, default=UNSET,
                           help="global step size (default: chosen from "
                                f"{', '.join(f'{c:g}' for c in t('step_size_candidates'))} by the training "
                                "bound of the first iterations, as in §5)")
    algorithm.add_argument("--selection-steps", type=_count, default=UNSET,
                           help=f"iterations per candidate when choosing the step size (default: {t('selection_steps')})")
    algorithm.add_argument("--prior-precision", type=_non_negative_float, default=UNSET,
                           help="precision of the N(0, I) prior on the parameters (MAP weight decay); 0 = none "
                                f"(default: {t('prior_precision'):g})")
    algorithm.add_argument("--max-samples", type=_count, default=UNSET,
                           help=f"stop after this many training samples (default: {DEFAULT_MAX_SAMPLES:,} "
                                "unless --epochs is given)")
    algorithm.add_argument("--epochs", type=_positive_float, default=UNSET,
                           help="stop after this many epochs, whichever of --epochs and --max-samples comes first "
                                "(default: none)")
    algorithm.add_argument("--seed", type=_seed, default=UNSET,
                           help=f"random seed; the same seed gives the same run (default: {t('seed')})")
    algorithm.add_argument("--engine", choices=ENGINE_CHOICES, default=UNSET,
                           help="how gradients are computed: native (hand-derived, C kernels; fastest on a CPU), "
                                "fused (hand-derived, torch operations; any device), autograd, or auto (the fastest "
                                f"that serves the model) (default: {t('engine')})")

    output = train.add_argument_group("output")
    output.add_argument("--out", metavar="RUN_DIR", default=UNSET,
                        help="run directory (default: runs/DATASET-zNz-TIMESTAMP)")
    output.add_argument("--overwrite", action="store_true", default=UNSET, help="replace a run already in RUN_DIR (default: off)")
    output.add_argument("--evals-per-decade", type=_count, default=UNSET,
                        help=f"evaluation points per decade of training samples, log-spaced (default: "
                             f"{t('evals_per_decade')})")
    output.add_argument("--eval-subset", type=_count, default=UNSET,
                        help="evaluate the bound on at most this many points of each split (default: all)")
    output.add_argument("--tensorboard", action="store_true", default=UNSET, help="also write TensorBoard scalars (default: off)")
    output.add_argument("--checkpoint-every", type=_count, default=UNSET, metavar="STEPS",
                        help="steps between checkpoints; there is one at every evaluation point too (default: "
                             f"{DEFAULT_CHECKPOINT_EVERY})")
    output.add_argument("--resume", metavar="RUN_DIR", default=UNSET,
                        help="continue the interrupted run in RUN_DIR from its newest checkpoint, with its "
                             "own settings (only --device, --threads, --no-progress, --tensorboard and "
                             "--checkpoint-every apply) (default: start a new run)")
    output.add_argument("--threads", type=_threads, default=UNSET, help="CPU threads (default: torch's choice)")
    output.add_argument("--no-progress", action="store_true", default=UNSET, help="no progress bar (default: off)")


def _add_evaluate_options(evaluate: argparse.ArgumentParser) -> None:
    import inspect

    from .evaluation.importance_sampling import PROTOCOL_SAMPLES
    from .runs import evaluate_run

    defaults = {name: parameter.default for name, parameter in inspect.signature(evaluate_run).parameters.items()}
    evaluate.add_argument("--split", choices=("test", "valid", "train"), default=UNSET,
                          help=f"data split (default: {defaults['split']})")
    evaluate.add_argument("--samples", type=_count, default=UNSET, dest="num_samples",
                          help=f"samples of z per datapoint (default: {defaults['num_samples']})")
    evaluate.add_argument("--num-points", type=_count, default=UNSET,
                          help="evaluate only the first N points of the split (default: all)")
    evaluate.add_argument("--nll", action="store_true", default=UNSET,
                          help="also estimate log p(x) by importance sampling with the encoder as proposal (default: off)")
    evaluate.add_argument("--k", type=_count, default=UNSET,
                          help=f"importance samples per datapoint for --nll (default: {PROTOCOL_SAMPLES}, Burda et al.'s)")
    evaluate.add_argument("--prior-mixture", type=_non_negative_float, default=UNSET,
                          help="--nll proposal (1 - a) q(z|x) + a p(z): a > 0 finds posterior mass the encoder "
                               f"misses, at the cost of a fraction a of the samples (default: {defaults['prior_mixture']:g})")
    evaluate.add_argument("--parameter-draws", type=_count, default=UNSET,
                          help="full-vb runs: draws of the decoder's parameters for --nll, k importance samples each "
                               f"(default: {defaults['parameter_draws']})")
    evaluate.add_argument("--hmc", action="store_true", default=UNSET,
                          help="also estimate log p(x) with the paper's HMC estimator (Appendix D; reliable "
                               "only for a low-dimensional z, the paper used Nz = 3) (default: off)")
    evaluate.add_argument("--hmc-samples", type=_count, default=UNSET,
                          help="posterior samples per datapoint in each of the two HMC sets (default: "
                               f"{defaults['hmc_samples']}, App. D)")
    evaluate.add_argument("--leapfrog-steps", type=_count, default=UNSET,
                          help=f"leapfrog steps per HMC move (default: {defaults['leapfrog_steps']}, App. D)")
    evaluate.add_argument("--seed", type=_seed, default=UNSET, help=f"random seed of the estimates (default: {defaults['seed']})")
    evaluate.add_argument("--json", action="store_true", default=UNSET, help="print one JSON object (default: off)")
    evaluate.add_argument("--threads", type=_threads, default=UNSET, help="CPU threads (default: torch's choice)")


def _build_parser() -> argparse.ArgumentParser:
    formatter = _HelpFormatter
    parser = _Parser(prog="aevb", description="Auto-Encoding Variational Bayes (Kingma & Welling, 2014).",
                     formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"aevb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", formatter_class=formatter,
                                help="train a variational auto-encoder (Algorithm 1, paper settings)",
                                description="Train a VAE with the AEVB algorithm. Defaults are the paper's "
                                            "(§5); with no options it trains on the embedded MNIST sample.")
    _add_train_options(train)

    evaluate = commands.add_parser("evaluate", formatter_class=formatter,
                                   help="lower bound of a trained run on the test set",
                                   description="Estimate the variational lower bound of a trained run on a "
                                               "data split, with many samples of z per datapoint.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by aevb train")
    _add_evaluate_options(evaluate)
    _add_data_options(evaluate)

    reproduce = commands.add_parser(
        "reproduce", formatter_class=formatter, help="reproduce a figure of the paper",
        description="Train the runs behind one of the paper's figures (resumable: complete runs in OUT are "
                    "kept) and draw it, with the numbers behind it as CSV/JSON. fig2: bound vs training "
                    "samples, AEVB vs wake-sleep; fig3: marginal likelihood, AEVB vs wake-sleep vs MCEM; "
                    "fig4/fig5: Frey Face/MNIST 2-D manifolds; samples: Figs. 7-11.")
    reproduce.add_argument("figure", choices=("fig2", "fig3", "fig4", "fig5", "samples", "nll"),
                           help="which figure; nll: the log-likelihood benchmark of later work (IWAE protocol)")
    reproduce.add_argument("--budget", type=_positive_float, default=1_000_000,
                           help="training samples per curve (the paper: 1e8); nll: a fraction <= 1 of each "
                                "model's published schedule, or training samples per model")
    reproduce.add_argument("--out", metavar="DIR", default=None, help="output directory (default: reproduce/FIGURE)")
    reproduce.add_argument("--jobs", type=_count, default=1, help="runs trained in parallel processes")
    reproduce.add_argument("--seed", type=_seed, default=0, help="random seed of every run")
    reproduce.add_argument("--datasets", nargs="+", choices=("mnist", "frey"), default=None,
                           help="fig2: only these datasets (default: both)")
    reproduce.add_argument("--latent-dims", nargs="+", type=_count, default=None,
                           help="fig2/samples: only these Nz (default: the paper's)")
    reproduce.add_argument("--methods", nargs="+", choices=("aevb", "wake-sleep", "mcem"), default=None,
                           help="fig2/fig3: only these algorithms (default: the paper's)")
    reproduce.add_argument("--train-sizes", nargs="+", type=_count, default=None,
                           help="fig3: Ntrain values (default: 1000 50000)")
    reproduce.add_argument("--points", type=_count, default=None,
                           help="fig3: train and test points for the marginal-likelihood estimate (default: 1000, "
                                "the paper's); nll: test points (default: all 10,000)")
    reproduce.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                           help="nll: only these of paper-z20, paper-z50, iwae-vae, iwae-k5, iwae-k50 (default: "
                                "all but iwae-k50, which runs where CUDA is)")
    reproduce.add_argument("--k", type=_count, default=5000,
                           help="nll: importance samples per test image (Burda et al.: 5000)")
    reproduce.add_argument("--mcem-step-size", type=_positive_float, default=0.01,
                           help="fig3: Adagrad step size of MCEM, which has no bound to choose one by")
    _add_data_options(reproduce)
    reproduce.add_argument("--threads", type=_threads, default=None, help="CPU threads (default: torch's choice)")

    sample = commands.add_parser("sample", formatter_class=formatter, help="draw samples from a trained run",
                                 description="Draw images E[x|z], z ~ N(0, I), from a trained run (a full-vb run "
                                             "decodes with its parameters at their posterior mean).")
    sample.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by aevb train")
    sample.add_argument("--num", type=_count, default=100, help="number of samples")
    sample.add_argument("--seed", type=_seed, default=0, help="random seed")
    sample.add_argument("--out", metavar="FILE", default=None,
                        help="output .png (grid) or .npy (array) (default: RUN_DIR/samples-seedN.png)")
    sample.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sample.add_argument("--label", type=_label, default=None,
                        help="conditional runs: draw every sample of this class (default: a grid with one row "
                             "per class, the same z down each column)")
    return parser


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _given(args: argparse.Namespace) -> dict:
    """The options the user gave (``aevb train`` leaves the others out: the library's defaults apply)."""
    return {key: value for key, value in vars(args).items() if key not in ("command", "argv")}


def _train(args: argparse.Namespace) -> int:
    from .training.distributed import shutdown

    given = _given(args)
    _set_threads(given.get("threads"))
    try:
        run_dir = _resume(given) if "resume" in given else _new_run(args, given)
    finally:
        shutdown()   # under torchrun: leave the process group cleanly
    return _report(run_dir)


#: What ``--resume`` takes besides the run: how to run it, never what to train (config.json says that).
RESUME_OPTIONS = ("resume", "device", "threads", "no_progress", "tensorboard", "checkpoint_every")


def _resume(given: dict):
    from .runs import resume_run

    ignored = [name for name in given if name not in RESUME_OPTIONS]
    if ignored:
        raise AevbError(f"--resume continues a run with the settings in its config.json; "
                        f"{', '.join(_flag('train', name) for name in ignored)} cannot change them (only --device, "
                        "--threads, --no-progress, --tensorboard and --checkpoint-every apply; start a new run "
                        "with --out to train otherwise)")
    options = {key: given[key] for key in ("device", "tensorboard", "checkpoint_every") if key in given}
    return resume_run(given["resume"], progress=not given.get("no_progress", False), **options)


def _new_run(args: argparse.Namespace, given: dict):
    import dataclasses

    from .models.vae import ModelConfig
    from .runs import DataConfig, default_run_dir, train_run
    from .training import TrainConfig

    def pick(config: type) -> dict:
        names = {field.name for field in dataclasses.fields(config)}
        return {name: value for name, value in given.items() if name in names}

    train_options = pick(TrainConfig)
    model_options = pick(ModelConfig)
    for name in ("conditional", "latent_dim"):
        if name in given:
            model_options[name] = given[name]
    algorithm = given.get("algorithm", "aevb")
    units = model_options.get("hidden_units")
    if "hidden_layers" not in model_options and isinstance(units, tuple):
        model_options["hidden_layers"] = len(units)
    layers = model_options.get("hidden_layers", _default(ModelConfig, "hidden_layers"))
    if layers < 0:
        raise AevbError(f"`hidden_layers` must be >= 0, got {layers}")
    if isinstance(units, tuple) and len(units) != layers:
        raise AevbError(f"--hidden-units lists {len(units)} widths but --hidden-layers is {layers}")
    if "conv_channels" in model_options and not isinstance(model_options["conv_channels"], tuple):
        model_options["conv_channels"] = (model_options["conv_channels"],)
    if model_options.get("log_variance_bound") == 0:
        model_options["log_variance_bound"] = None   # 0 on the command line: unbounded
    posterior = model_options.get("posterior", _default(ModelConfig, "posterior"))
    prior = model_options.get("prior", _default(ModelConfig, "prior"))
    check_pair(posterior, prior)   # before any note below: a refused pair is one line
    if "estimator" not in train_options and algorithm == "aevb":
        estimator = default_estimator(posterior, prior)
        if estimator != _default(TrainConfig, "estimator"):
            print(f"note: KL({posterior} || {prior}) has no closed form; training with estimator {estimator} "
                  "(eq. 6) instead of B", file=sys.stderr)
            train_options["estimator"] = estimator
    if "decoder_posterior_init_std" in model_options and algorithm != "full-vb":
        raise AevbError("--posterior-init-std applies to --algorithm full-vb only")
    train_config = TrainConfig(**train_options)
    data_config = DataConfig(**{name: given[name] for name in ("dataset", "data_dir", "download", "pixel_divisor",
                                                                "merge_valid") if name in given})
    out = given.get("out") or default_run_dir(data_config.dataset,
                                              model_options.get("latent_dim", _default(ModelConfig, "latent_dim")))
    args.out = str(out)   # for the message of an interrupted run
    run_options = {name: given[name] for name in ("device", "overwrite", "tensorboard", "checkpoint_every")
                   if name in given}
    return train_run(out, data_config, model_options, train_config, progress=not given.get("no_progress", False),
                     algorithm=algorithm, command=shlex.join(["aevb", *args.argv]), **run_options)


def _report(run_dir) -> int:
    if os.environ.get("RANK", "0") != "0":   # one report per run, from rank 0
        return 0
    from .checkpoint import read_json

    summary = read_json(run_dir / "summary.json")
    bounds = [f"{name} bound {summary[key]:.2f}" for name, key in (("train", "train_bound"), ("validation", "valid_bound"))
              if summary.get(key) is not None]
    print(f"run written to {run_dir}: {summary['samples']:,} samples in {summary['training_seconds']:.0f} s "
          f"({summary['samples_per_second']:,.0f} samples/s), step size {summary['step_size']}"
          + (f", {', '.join(bounds)} nats per datapoint" if bounds else " (this algorithm has no bound)"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import inspect

    from .evaluation.importance_sampling import PROTOCOL_SAMPLES
    from .runs import evaluate_run

    given = _given(args)
    _set_threads(given.get("threads"))
    accepted = inspect.signature(evaluate_run).parameters
    options = {name: value for name, value in given.items() if name in accepted}
    if given.get("nll"):
        options["log_likelihood_samples"] = given.get("k", PROTOCOL_SAMPLES)
    result = evaluate_run(**options)
    if given.get("json"):   # strict JSON: no NaN tokens, whatever the model gives
        from .checkpoint import strict_json

        print(json.dumps(strict_json(result), allow_nan=False))
        return 0
    split = result["split"]
    print(f"{result['dataset']} {split} set, {result['num_datapoints']:,} points; nats per datapoint, "
          "± one standard error")
    print(f"  lower bound (estimator {result['estimator']}, L = {result['samples_per_datapoint']}): "
          f"{result[f'{split}_bound']:.3f} ± {result[f'{split}_bound_stderr']:.3f} (over datapoints)")
    if "decoder_parameter_kl" in result:
        print(f"  full VB: KL(q(θ) ‖ p(θ)) = {result['decoder_parameter_kl']:.1f} nats, "
              f"{result['decoder_parameter_kl_per_datapoint']:.3f} per training point"
              + (f"; full bound {result['train_full_bound']:.3f}" if "train_full_bound" in result else ""))
    if "log_likelihood" in result:
        what = "log p(x|y)" if result.get("conditional") else "log p(x)"   # a conditional VAE: given the label
        draws = f"{result['parameter_draws']} draws of θ × " if "parameter_draws" in result else ""
        print(f"  {what}, importance sampling, {draws}k = {result['log_likelihood_samples']}: {result['log_likelihood']:.3f} "
              f"± {result['log_likelihood_stderr']:.3f} (Monte Carlo); negative log-likelihood "
              f"{-result['log_likelihood']:.3f}; {result['log_likelihood_seconds']:.1f} s")
    if "hmc_log_likelihood" in result:
        print(f"  log p(x), HMC estimator (App. D), L = {result['hmc_samples']}: {result['hmc_log_likelihood']:.3f} "
              f"± {result['hmc_log_likelihood_stderr']:.3f}; negative log-likelihood "
              f"{-result['hmc_log_likelihood']:.3f}; acceptance {result['hmc_acceptance']:.2f}; "
              f"{result['hmc_seconds']:.1f} s")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .runs import sample_run

    path = sample_run(args.run_dir, num_samples=args.num, seed=args.seed, out=args.out, device=args.device,
                      label=args.label)
    print(f"wrote {path}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    import time

    from .experiments import reproduce

    _set_threads(args.threads)
    if args.datasets and args.figure != "fig2":
        raise AevbError("--datasets applies to fig2 only")
    if args.models and args.figure != "nll":
        raise AevbError("--models applies to nll only")
    started = time.perf_counter()
    paths = reproduce(args.figure, args.out or f"reproduce/{args.figure}", args.budget, args.data_dir,
                      jobs=args.jobs, device=args.device, seed=args.seed, datasets=args.datasets,
                      latent_dims=args.latent_dims, methods=args.methods, train_sizes=args.train_sizes,
                      points=args.points, mcem_step_size=args.mcem_step_size, models=args.models, k=args.k)
    print(f"{args.figure} reproduced in {time.perf_counter() - started:.0f} s: " + ", ".join(map(str, paths)))
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample, "reproduce": _reproduce}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aevb`` console script; returns the exit status."""
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in config.json: the command that made a run, also when called in-process
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning   # a user reads "aevb: warning: ...", not our source lines
    try:
        status = _run_command(args)
    finally:
        warnings.formatwarning = previous_format
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One of several torchrun processes: everything is written and flushed; leave without
        # C++ static destructors, where torch 2.x's distributed runtime now and then aborts
        # ("terminate called without an active exception"; how often: docs/performance.md) and
        # would turn a finished run into a failed one.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    text = str(message)
    return f"{text if text.startswith('aevb') else 'aevb: warning: ' + text}\n"


def _flag(command: str, name: str) -> str:
    """The flag of ``aevb command`` that sets the library setting ``name`` (``step_size`` →
    ``--step-size``); the name itself where the command has none."""
    return _flags_of(command).get(name) or FLAG_ALIASES.get((command, name), name)


@functools.cache
def _flags_of(command: str) -> dict[str, str]:
    """Setting → flag for every option of ``aevb command`` (the parser is built once, not per name)."""
    parser = _build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    flags: dict[str, str] = {}
    for action in subcommands.choices[command]._actions:
        if action.option_strings:
            flags.setdefault(action.dest, action.option_strings[0])
    return flags


#: Library settings that no single option of the command sets.
FLAG_ALIASES = {("evaluate", "log_likelihood_samples"): "--nll (--k)", ("sample", "num_samples"): "--num"}


def _in_flags(message: str, command: str) -> str:
    """A library message with its settings (written `name`) turned into the command's flags."""
    return re.sub(r"`([a-z_][a-z0-9_]*)`", lambda match: _flag(command, match.group(1)), message)


def _run_directory(args: argparse.Namespace) -> str | None:
    """The run directory a train command writes into, once known."""
    if args.command != "train":
        return None
    return getattr(args, "resume", None) or getattr(args, "out", None)


def _run_command(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except TrainingDiverged as error:
        run = _run_directory(args)
        reuse = f"; {run} keeps the diverged run, so a new run there needs --overwrite" if run else ""
        print(f"aevb {args.command}: error: {_in_flags(str(error), args.command)}{reuse}", file=sys.stderr)
        return EXIT_USAGE
    except AevbError as error:
        print(f"aevb {args.command}: error: {_in_flags(str(error), args.command)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingInterrupted as interrupted:
        if os.environ.get("RANK", "0") != "0":   # rank 0 says it, once
            return 128 + (getattr(interrupted, "signal", None) or signal.SIGTERM)
        if args.command == "train":
            run = getattr(args, "resume", None) or getattr(args, "out", None) or "RUN_DIR"
            how = f"aevb train --resume {run}"
        else:
            how = "the same command again"
        print(f"aevb {args.command}: {interrupted}; checkpoint saved. Continue with: {how}", file=sys.stderr)
        return 128 + (getattr(interrupted, "signal", None) or 2)
    except KeyboardInterrupt:
        print(f"aevb {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        # Disk full, permission denied, ...: the user's environment, not a bug.
        print(f"aevb {args.command}: error: {error.strerror or error}"
              + (f": {error.filename}" if getattr(error, "filename", None) else "") + _resume_hint(args),
              file=sys.stderr)
        return EXIT_USAGE


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue a training that an OS error (a full disk) stopped, when it has a checkpoint."""
    run = _run_directory(args)
    if run is None:
        return ""
    from .training.checkpoints import has_checkpoint

    if not has_checkpoint(run):
        return ""
    return f"; once fixed, continue with: aevb train --resume {run}"


if __name__ == "__main__":
    sys.exit(main())
