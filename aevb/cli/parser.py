"""The command line's options, declared once: each names a library setting (its ``dest``), leaves it
unset unless the user gives it (the library owns every default and the help quotes it), and is
the flag a library error about that setting is translated into (:func:`aevb.cli.flags._in_flags`)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect

from .. import __version__
from ..engines import ENGINE_CHOICES
from ..evaluation.importance_sampling import PROTOCOL_SAMPLES
from ..experiments import EXPERIMENTS, fig3
from ..experiments import reproduce as reproduce_figure
from ..experiments.fig3 import DEFAULT_MCEM_STEP_SIZE
from ..models.config import ModelConfig
from ..models.families import FAMILIES
from ..runs import DataConfig, evaluate_run, sample_run
from ..runs.config_file import FORMATS as CONFIG_FORMATS
from ..runs.evaluate import MODEL_CHOICES
from ..runs.loggers import LOGGERS
from ..runs.spec import DEFAULT_CHECKPOINT_EVERY
from ..training import DEFAULT_MAX_SAMPLES, TrainConfig
from .arguments import (
    _bound,
    _choice_of,
    _count,
    _count_list,
    _counts,
    _label,
    _non_negative_float,
    _number,
    _path,
    _positive_float,
    _seed,
    _threads,
)

FAMILY_NAMES = tuple(FAMILIES)


EXIT_USAGE = 2

#: What --checkpoint takes: a run's models other than its final one (which is read without it).
CHECKPOINT_CHOICES = tuple(choice for choice in MODEL_CHOICES if choice != "final")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text.lower():
            return help_text
        return super()._get_help_string(action)

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        # A setting of the run's spec is "section.name": the value's placeholder is the name alone.
        return action.dest.rpartition(".")[2].upper()


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="directory holding the data files (default: $AEVB_DATA_DIR, else the cache directory ~/.cache/aevb)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--download",
        action="store_true",
        default=UNSET,
        help="download data files that are missing (with checksum verification) into the data directory (default: off)",
    )


#: An option of ``aevb train`` the user did not give is absent from the parsed arguments, so that
#: the library's default applies (one default per setting, owned by the library); the help
#: quotes it from there.
UNSET = argparse.SUPPRESS


def _default(config: type, name: str):
    """The library's default of setting ``name`` of the dataclass ``config``."""
    field = next(field for field in dataclasses.fields(config) if field.name == name)
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _parameter_default(function, name: str):
    """The library's default of parameter ``name`` of ``function``."""
    return inspect.signature(function).parameters[name].default


def _add_train_options(train: argparse.ArgumentParser) -> None:
    def t(name: str):
        return _default(TrainConfig, name)

    def m(name: str):
        return _default(ModelConfig, name)

    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        dest="data.dataset",
        default=UNSET,
        help="mnist-sample (embedded, offline), mnist, binarized-mnist, frey, or a path to "
        f"a .npy/.npz file (default: {_default(DataConfig, 'dataset')})",
    )
    data.add_argument(
        "--data-dir",
        dest="data.data_dir",
        metavar="DIR",
        default=UNSET,
        help="directory holding the data files (default: $AEVB_DATA_DIR, else the cache directory ~/.cache/aevb)",
    )
    data.add_argument(
        "--device",
        dest="run.device",
        default=UNSET,
        help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
    )
    data.add_argument(
        "--download",
        dest="data.download",
        action="store_true",
        default=UNSET,
        help="download missing data files into the data directory (checksums verified) (default: off)",
    )
    data.add_argument(
        "--pixel-divisor",
        dest="data.pixel_divisor",
        type=_number(255.0, inclusive=True),
        default=UNSET,
        help="grey levels k become k / this (default: 256 for mnist, mnist-sample and frey, as in "
        "the authors' mnist.pkl.gz; 255 for your files)",
    )
    data.add_argument(
        "--merge-valid",
        dest="data.merge_valid",
        action="store_true",
        default=UNSET,
        help="train on the training and validation splits together (MNIST: all 60,000 images), "
        "with no validation split (default: off)",
    )
    data.add_argument(
        "--binarize",
        dest="training.binarize",
        choices=("none", "dynamic"),
        default=UNSET,
        help=f"dynamic: a fresh Bernoulli draw of each image every time it is used (default: {t('binarize')})",
    )

    model = train.add_argument_group("model (paper §3, App. C)")
    model.add_argument(
        "--latent-dim",
        dest="model.latent_dim",
        type=_count,
        default=UNSET,
        help=f"Nz, dimension of z (default: {m('latent_dim')})",
    )
    model.add_argument(
        "--hidden-units",
        dest="model.hidden_units",
        type=_counts,
        default=UNSET,
        help=f"units per hidden layer (default: {m('hidden_units')}; 200 for frey, as in §5), or one "
        "width per layer from the data side, e.g. 500,200 (the decoder mirrors them)",
    )
    model.add_argument(
        "--hidden-layers",
        dest="model.hidden_layers",
        type=int,
        default=UNSET,
        help="hidden layers in encoder and decoder (default: as many as --hidden-units lists, 1 for a single width)",
    )
    model.add_argument(
        "--architecture",
        dest="model.architecture",
        choices=("mlp", "conv"),
        default=UNSET,
        help="mlp (App. C) or conv: stride-2 convolutions on the images (--conv-channels), then "
        "the hidden layers; the decoder mirrors them with transposed convolutions "
        f"(default: {m('architecture')})",
    )
    model.add_argument(
        "--conv-channels",
        dest="model.conv_channels",
        type=_count_list,
        default=UNSET,
        metavar="C1,C2,...",
        help="channels of each stride-2 convolution of --architecture conv (default: "
        f"{','.join(map(str, m('conv_channels')))})",
    )
    model.add_argument(
        "--conditional",
        dest="model.conditional",
        action="store_true",
        default=UNSET,
        help="conditional VAE p(x|z,y), q(z|x,y) on the data's class labels y (one-hot inputs) (default: off)",
    )
    model.add_argument(
        "--activation",
        dest="model.activation",
        default=UNSET,
        help=f"tanh, relu, softplus, elu or sigmoid (default: {m('activation')})",
    )
    model.add_argument(
        "--likelihood",
        dest="model.likelihood",
        choices=("bernoulli", "gaussian"),
        default=UNSET,
        help="decoder (default: bernoulli for data in [0,1]; gaussian for frey and other data)",
    )
    model.add_argument(
        "--sigmoid-mean",
        dest="model.sigmoid_mean",
        action=argparse.BooleanOptionalAction,
        default=UNSET,
        help="Gaussian decoder mean through a sigmoid (default: on for frey)",
    )
    model.add_argument(
        "--decoder-variance",
        dest="model.decoder_variance",
        choices=("network", "per-dimension"),
        default=UNSET,
        help="Gaussian decoder: log σ² output by the network (App. C.2), or a learned "
        f"per-dimension vector independent of z (default: {m('decoder_variance')})",
    )
    model.add_argument(
        "--posterior",
        dest="model.posterior",
        choices=FAMILY_NAMES,
        default=UNSET,
        metavar="FAMILY",
        help="approximate posterior q(z|x), a reparameterisable family of §2.4: "
        + ", ".join(FAMILY_NAMES)
        + f" (default: {m('posterior')}, N(μ, diag σ²))",
    )
    model.add_argument(
        "--prior",
        dest="model.prior",
        choices=FAMILY_NAMES,
        default=UNSET,
        metavar="FAMILY",
        help="prior p(z): the standard member of a family on the posterior's support, e.g. "
        f"laplace = Laplace(0, 1)^J (default: {m('prior')}, N(0, I))",
    )
    model.add_argument(
        "--init",
        dest="model.init",
        choices=("normal", "glorot"),
        default=UNSET,
        help="normal: every parameter from N(0, σ²) (§5); glorot: Glorot-uniform weights, zero "
        "biases, a Bernoulli decoder's output bias at the logit of the mean training image "
        f"(Burda et al.'s code) (default: {m('init')})",
    )
    model.add_argument(
        "--init-std",
        dest="model.init_std",
        type=_positive_float,
        default=UNSET,
        help=f"σ of the normal initialisation (default: {m('init_std')}, reading §5's N(0, 0.01) as a "
        "variance; see docs/results.md)",
    )
    model.add_argument(
        "--log-variance-bound",
        dest="model.log_variance_bound",
        type=_bound,
        default=UNSET,
        metavar="B",
        help="bound every log σ² (encoder, Gaussian decoder) smoothly to (-B, B) as B·tanh(raw/B), "
        "part of the model, so no variance overflows or vanishes; 0: unbounded, the paper's "
        f"exact parameterisation (default: {m('log_variance_bound'):g})",
    )
    model.add_argument(
        "--posterior-init-std",
        dest="model.decoder_posterior_init_std",
        type=_positive_float,
        default=UNSET,
        help="full-vb: σ of the posterior over the decoder's parameters at initialisation "
        f"(default: {m('decoder_posterior_init_std')}; the means start as the MAP model's weights)",
    )

    algorithm = train.add_argument_group("training (Algorithm 1, §5)")
    algorithm.add_argument(
        "--algorithm",
        choices=("aevb", "wake-sleep", "mcem", "full-vb"),
        default=UNSET,
        help="learning algorithm: AEVB (Algorithm 1), a baseline of §5 — wake-sleep, or "
        "Monte Carlo EM with HMC (App. E; needs --step-size, reports no bound) — or full-vb: "
        "full variational Bayes, a Gaussian posterior over the decoder's parameters with "
        "the N(0, I/--prior-precision) prior as its KL term (App. F) (default: aevb)",
    )
    algorithm.add_argument(
        "--estimator",
        dest="training.estimator",
        type=str.upper,
        choices=("A", "B", "IWAE"),
        default=UNSET,
        help="SGVB estimator A or B (§2.3), or IWAE, the importance-weighted bound of Burda et "
        "al. (2015) with k = --samples-per-datapoint (A at k = 1) (default: "
        f"{t('estimator')}, the paper's; A when the --posterior/--prior pair has no "
        "closed-form KL)",
    )
    algorithm.add_argument(
        "--batch-size",
        dest="training.batch_size",
        type=_count,
        default=UNSET,
        help=f"minibatch size M (default: {t('batch_size')})",
    )
    algorithm.add_argument(
        "--samples-per-datapoint",
        dest="training.num_samples",
        type=_count,
        default=UNSET,
        help=f"L, samples of z per datapoint (default: {t('num_samples')})",
    )
    algorithm.add_argument(
        "--optimizer",
        dest="training.optimizer",
        choices=("adagrad", "adam"),
        default=UNSET,
        help=f"optimiser (default: {t('optimizer')})",
    )
    algorithm.add_argument(
        "--optimizer-eps",
        dest="training.optimizer_eps",
        type=_positive_float,
        default=UNSET,
        help="the optimiser's ε (default: torch's, 1e-10 for Adagrad and 1e-8 for Adam)",
    )
    algorithm.add_argument(
        "--schedule",
        dest="training.schedule",
        choices=("constant", "iwae"),
        default=UNSET,
        help="step size over the run: constant (§5), or iwae: Burda et al.'s eight stages of "
        "3^i passes at step size × 10^(-i/7), stretched over the run "
        f"(default: {t('schedule')})",
    )
    algorithm.add_argument(
        "--step-size",
        dest="training.step_size",
        type=_positive_float,
        default=UNSET,
        help="global step size (default: chosen from "
        f"{', '.join(f'{c:g}' for c in t('step_size_candidates'))} by the training "
        "bound of the first iterations, as in §5)",
    )
    algorithm.add_argument(
        "--selection-steps",
        dest="training.selection_steps",
        type=_count,
        default=UNSET,
        help=f"iterations per candidate when choosing the step size (default: {t('selection_steps')})",
    )
    algorithm.add_argument(
        "--prior-precision",
        dest="training.prior_precision",
        type=_non_negative_float,
        default=UNSET,
        help="precision of the N(0, I) prior on the parameters (MAP weight decay); 0 = none "
        f"(default: {t('prior_precision'):g})",
    )
    algorithm.add_argument(
        "--max-samples",
        dest="training.max_samples",
        type=_count,
        default=UNSET,
        help=f"stop after this many training samples; with --resume, a larger number extends the run, finished "
        f"or not (default: {DEFAULT_MAX_SAMPLES:,} unless --epochs is given)",
    )
    algorithm.add_argument(
        "--early-stopping",
        dest="training.early_stopping",
        type=_count,
        default=UNSET,
        metavar="N",
        help="stop after N evaluation points in a row without a higher validation bound (needs a validation "
        "split); RUN_DIR/best keeps the model at the highest one, as every run with a validation split does "
        "(default: off, train to the budget)",
    )
    algorithm.add_argument(
        "--epochs",
        dest="training.epochs",
        type=_positive_float,
        default=UNSET,
        help="stop after this many epochs, whichever of --epochs and --max-samples comes first (default: none)",
    )
    algorithm.add_argument(
        "--seed",
        dest="training.seed",
        type=_seed,
        default=UNSET,
        help=f"random seed; the same seed gives the same run (default: {t('seed')})",
    )
    algorithm.add_argument(
        "--engine",
        dest="training.engine",
        choices=ENGINE_CHOICES,
        default=UNSET,
        help="how gradients are computed: native (hand-derived, C kernels; fastest on a CPU), "
        "fused (hand-derived, torch operations; any device), autograd, or auto (the fastest "
        f"that serves the model) (default: {t('engine')})",
    )

    output = train.add_argument_group("output")
    output.add_argument(
        "--config",
        metavar="FILE",
        default=UNSET,
        help="start from the settings of this JSON or YAML (.yaml, .yml) file, shaped like a run's config.json "
        "or --print-config's output (sections data, model, training, algorithm, run), whole or any part: "
        "e.g. RUN_DIR/config.json to rerun a run; what it leaves out comes from the defaults and the data, "
        "and options given here override its fields (default: none, the library's defaults)",
    )
    output.add_argument(
        "--print-config",
        nargs="?",
        const="json",
        choices=CONFIG_FORMATS,
        default=UNSET,
        help="print the resolved configuration as json (as config.json holds it) or yaml, a file --config "
        "reads back, and exit without training (default: off; json when no format is given)",
    )
    output.add_argument(
        "--out",
        type=_path,
        metavar="RUN_DIR",
        default=UNSET,
        help="run directory (default: runs/DATASET-zNz-TIMESTAMP)",
    )
    output.add_argument(
        "--overwrite", action="store_true", default=UNSET, help="replace a run already in RUN_DIR (default: off)"
    )
    output.add_argument(
        "--evals-per-decade",
        dest="training.evals_per_decade",
        type=_count,
        default=UNSET,
        help=f"evaluation points per decade of training samples, log-spaced (default: {t('evals_per_decade')})",
    )
    output.add_argument(
        "--eval-subset",
        dest="training.eval_subset",
        type=_count,
        default=UNSET,
        help="evaluate the bound on at most this many points of each split (default: all)",
    )
    output.add_argument(
        "--logger",
        dest="run.loggers",
        action="append",
        choices=tuple(LOGGERS),
        default=UNSET,
        help="also report every evaluation point to this experiment tracker (repeatable; each is "
        "an extra: pip install 'aevb[wandb]'; default: none)",
    )
    output.add_argument(
        "--tensorboard",
        dest="run.loggers",
        action="append_const",
        const="tensorboard",
        default=UNSET,
        help="also write TensorBoard scalars (default: off)",
    )
    output.add_argument(
        "--checkpoint-every",
        dest="run.checkpoint_every",
        type=_count,
        default=UNSET,
        metavar="STEPS",
        help="steps between checkpoints; there is one at every evaluation point too (default: "
        f"{DEFAULT_CHECKPOINT_EVERY})",
    )
    output.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=UNSET,
        help="continue the interrupted run in RUN_DIR from its newest checkpoint, with its "
        "own settings (only --device, --threads, --no-progress, --tensorboard, --logger and "
        "--checkpoint-every apply, and --max-samples to extend it, even once finished) (default: start a new run)",
    )
    output.add_argument(
        "--threads",
        dest="run.threads",
        type=_threads,
        default=UNSET,
        help="CPU threads, fixed, for runs that repeat bit for bit (default: adaptive, the count "
        "that steps fastest now, measured again as the machine's load changes)",
    )
    output.add_argument(
        "--no-progress",
        dest="run.progress",
        action="store_false",
        default=UNSET,
        help="no progress bar; instead, as wherever stderr is no terminal, a line every 10 minutes "
        "with the samples done, the speed and the time left (default: off)",
    )


def _add_evaluate_options(evaluate: argparse.ArgumentParser) -> None:
    defaults = {name: parameter.default for name, parameter in inspect.signature(evaluate_run).parameters.items()}
    evaluate.add_argument(
        "--split", choices=("test", "valid", "train"), default=UNSET, help=f"data split (default: {defaults['split']})"
    )
    evaluate.add_argument(
        "--samples",
        type=_count,
        default=UNSET,
        dest="num_samples",
        help=f"samples of z per datapoint (default: {defaults['num_samples']})",
    )
    evaluate.add_argument(
        "--num-points", type=_count, default=UNSET, help="evaluate only the first N points of the split (default: all)"
    )
    evaluate.add_argument(
        "--nll",
        action="store_true",
        default=UNSET,
        help="also estimate log p(x) by importance sampling with the encoder as proposal (default: off)",
    )
    evaluate.add_argument(
        "--k",
        type=_count,
        default=UNSET,
        help=f"importance samples per datapoint for --nll (default: {PROTOCOL_SAMPLES}, Burda et al.'s)",
    )
    evaluate.add_argument(
        "--prior-mixture",
        type=_non_negative_float,
        default=UNSET,
        help="--nll proposal (1 - a) q(z|x) + a p(z): a > 0 finds posterior mass the encoder "
        "misses, at the cost of a fraction a of the samples; 1 is the prior alone, always used "
        f"for a run that trained no encoder, mcem (default: {defaults['prior_mixture']:g})",
    )
    evaluate.add_argument(
        "--parameter-draws",
        type=_count,
        default=UNSET,
        help="full-vb runs: draws of the decoder's parameters for --nll, k importance samples each "
        f"(default: {defaults['parameter_draws']})",
    )
    evaluate.add_argument(
        "--hmc",
        action="store_true",
        default=UNSET,
        help="also estimate log p(x) with the paper's HMC estimator (Appendix D; reliable "
        "only for a low-dimensional z, the paper used Nz = 3) (default: off)",
    )
    evaluate.add_argument(
        "--hmc-samples",
        type=_count,
        default=UNSET,
        help="posterior samples per datapoint in each of the two HMC sets (default: "
        f"{defaults['hmc_samples']}, App. D)",
    )
    evaluate.add_argument(
        "--leapfrog-steps",
        type=_count,
        default=UNSET,
        help=f"leapfrog steps per HMC move (default: {defaults['leapfrog_steps']}, App. D)",
    )
    evaluate.add_argument(
        "--seed", type=_seed, default=UNSET, help=f"random seed of the estimates (default: {defaults['seed']})"
    )
    evaluate.add_argument("--json", action="store_true", default=UNSET, help="print one JSON object (default: off)")
    evaluate.add_argument(
        "--no-progress",
        action="store_true",
        default=UNSET,
        help="no progress (default: bars with the time left on a terminal, for every estimate; "
        "where stderr is no terminal, a line every 10 minutes)",
    )
    evaluate.add_argument("--threads", type=_threads, default=UNSET, help="CPU threads (default: torch's choice)")
    evaluate.add_argument(
        "--checkpoint",
        nargs="?",
        const="latest",
        type=_choice_of(CHECKPOINT_CHOICES, "RUN_DIR"),
        metavar="{" + ",".join(CHECKPOINT_CHOICES) + "}",
        default=UNSET,
        help="evaluate the run's latest checkpoint (a run still training, or one that was stopped; "
        "the default when no value is given), or its best model by validation bound "
        "(default: off, the finished run's model)",
    )


def _build_parser() -> argparse.ArgumentParser:
    formatter = _HelpFormatter
    parser = _Parser(
        prog="aevb", description="Auto-Encoding Variational Bayes (Kingma & Welling, 2014).", formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"aevb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser(
        "train",
        formatter_class=formatter,
        help="train a variational auto-encoder (Algorithm 1, paper settings)",
        description="Train a VAE with the AEVB algorithm. Defaults are the paper's "
        "(§5); with no options it trains on the embedded MNIST sample.",
    )
    _add_train_options(train)

    evaluate = commands.add_parser(
        "evaluate",
        formatter_class=formatter,
        help="lower bound of a trained run on the test set",
        description="Estimate the variational lower bound of a trained run on a "
        "data split, with many samples of z per datapoint.",
    )
    evaluate.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="+",
        help="run directories written by aevb train (several: each in turn, its result printed as it "
        "finishes; --json prints a list, one result a line)",
    )
    _add_evaluate_options(evaluate)
    _add_data_options(evaluate)

    reproduce = commands.add_parser(
        "reproduce",
        formatter_class=formatter,
        help="reproduce a figure of the paper",
        description="Train the runs behind one of the paper's figures (resumable: complete runs in OUT are "
        "kept) and draw it, with the numbers behind it as CSV/JSON. "
        + "; ".join(f"{name}: {experiment.summary}" for name, experiment in EXPERIMENTS.items())
        + ".",
    )
    r = functools.partial(_parameter_default, reproduce_figure)
    d = functools.partial(_parameter_default, sample_run)
    reproduce.add_argument("figure", choices=tuple(EXPERIMENTS), help="which figure (see above)")
    reproduce.add_argument(
        "--budget",
        type=_positive_float,
        default=UNSET,
        help="training samples per curve (the paper: 1e8); nll: a fraction <= 1 of each "
        f"model's published schedule, or training samples per model (default: {r('budget'):g})",
    )
    reproduce.add_argument(
        "--out", type=_path, metavar="DIR", default=None, help="output directory (default: reproduce/FIGURE)"
    )
    reproduce.add_argument(
        "--jobs", type=_count, default=UNSET, help=f"runs trained in parallel processes (default: {r('jobs')})"
    )
    reproduce.add_argument("--seed", type=_seed, default=UNSET, help=f"random seed of every run (default: {r('seed')})")
    reproduce.add_argument(
        "--datasets",
        nargs="+",
        choices=("mnist", "frey"),
        default=None,
        help="fig2: only these datasets (default: both)",
    )
    reproduce.add_argument(
        "--latent-dims", nargs="+", type=_count, default=None, help="fig2/samples: only these Nz (default: the paper's)"
    )
    reproduce.add_argument(
        "--methods",
        nargs="+",
        choices=("aevb", "wake-sleep", "mcem"),
        default=None,
        help="fig2/fig3: only these algorithms (default: the paper's)",
    )
    reproduce.add_argument(
        "--train-sizes",
        nargs="+",
        type=_count,
        default=None,
        help=f"fig3: Ntrain values (default: {' '.join(map(str, fig3.TRAIN_SIZES))})",
    )
    reproduce.add_argument(
        "--points",
        type=_count,
        default=None,
        help="fig3: train and test points for the marginal-likelihood estimate (default: "
        f"{_parameter_default(fig3.specs, 'points')}, the paper's); nll: test points (default: "
        "all 10,000)",
    )
    reproduce.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="MODEL",
        help="nll: only these of paper-z20, paper-z50, iwae-vae, iwae-k5, iwae-k50 (default: "
        "all but iwae-k50, which runs where CUDA is)",
    )
    reproduce.add_argument(
        "--k",
        type=_count,
        default=UNSET,
        help=f"nll: importance samples per test image (default: {PROTOCOL_SAMPLES}, Burda et al.'s)",
    )
    reproduce.add_argument(
        "--mcem-step-size",
        type=_positive_float,
        default=UNSET,
        help="fig3: Adagrad step size of MCEM, which has no bound to choose one by "
        f"(default: {DEFAULT_MCEM_STEP_SIZE})",
    )
    _add_data_options(reproduce)
    reproduce.add_argument(
        "--threads",
        type=_threads,
        default=None,
        help="CPU threads of every run, fixed (default: adaptive within each job's share of the CPUs)",
    )
    reproduce.add_argument(
        "--no-progress",
        action="store_true",
        default=UNSET,
        help="no progress bars (default: shown on a terminal: the runs overall and, with --jobs "
        "1, each run's training, with the time left); without bars, a line every 10 minutes "
        "gives each run's samples done, speed and time left",
    )

    compare = commands.add_parser(
        "compare",
        formatter_class=formatter,
        help="compare runs by their bound curves",
        description="Overlay the bound curves (training, and validation and test where "
        "the runs evaluated them, against training samples) of several runs, "
        "labelled by the settings in which they differ, and print a table of "
        "their final bounds.",
    )
    compare.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="run directories written by aevb train")
    compare.add_argument(
        "--out",
        type=_path,
        metavar="FILE.png",
        default=UNSET,
        help="write the figure here (default: none, only the table)",
    )
    compare.add_argument("--json", action="store_true", default=UNSET, help="print the table as JSON (default: off)")
    compare.add_argument(
        "--overwrite",
        action="store_true",
        default=UNSET,
        help="replace the file --out names if it exists (default: off, refused)",
    )

    sample = commands.add_parser(
        "sample",
        formatter_class=formatter,
        help="draw samples from a trained run",
        description="Draw images E[x|z], z ~ p(z) the run's prior, from a trained run (a full-vb run "
        "decodes with its parameters at their posterior mean).",
    )
    sample.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by aevb train")
    sample.add_argument("--num", type=_count, default=UNSET, help=f"number of samples (default: {d('num_samples')})")
    sample.add_argument("--seed", type=_seed, default=UNSET, help=f"random seed (default: {d('seed')})")
    sample.add_argument(
        "--out",
        type=_path,
        metavar="FILE",
        default=None,
        help="output .png (grid) or .npy (array) (default: RUN_DIR/samples-seedN.png, "
        "RUN_DIR/samples-seedN-labelY.png with --label)",
    )
    sample.add_argument(
        "--overwrite",
        action="store_true",
        default=UNSET,
        help="replace the file --out names if it exists (default: off, refused)",
    )
    sample.add_argument(
        "--device", default=UNSET, help=f"auto (CUDA when available), cpu, cuda or cuda:N (default: {d('device')})"
    )
    sample.add_argument(
        "--label",
        type=_label,
        default=None,
        help="conditional runs: draw every sample of this class (default: a grid with one row "
        "per class, the same z down each column)",
    )
    sample.add_argument(
        "--checkpoint",
        nargs="?",
        const="latest",
        type=_choice_of(CHECKPOINT_CHOICES, "RUN_DIR"),
        metavar="{" + ",".join(CHECKPOINT_CHOICES) + "}",
        default=UNSET,
        help="sample the model of the run's latest checkpoint (a run still training, or one that was "
        "stopped; the default when no value is given), or its best model by validation bound "
        "(default: off, the finished run's model)",
    )
    return parser
