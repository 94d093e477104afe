"""The command line's options, declared once: each names a library setting (its ``dest``), leaves it
unset unless the user gives it (the library owns every default and the help quotes it), and is
the flag a library error about that setting is translated into (:func:`aevb.cli.flags._in_flags`).

This module imports no torch, so that ``aevb --help``, ``aevb train --help`` and ``aevb --version``
answer at once: the defaults it quotes come from torch-free modules (the settings' dataclasses,
:mod:`aevb.choices`); the commands whose options quote defaults of modules that import torch get
their options when chosen (:data:`DEFERRED_OPTIONS`)."""

from __future__ import annotations

import argparse
import importlib

from .. import __version__
from ..choices import (
    AUTO_ENGINE,
    CONFIG_FORMATS,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_DATASET,
    ENGINE_NAMES,
    FAMILY_NAMES,
    LOGGER_NAMES,
    MINIBATCH_ORDERS,
    OPTIMIZER_NAMES,
    USER_SPLIT_SEED,
)
from ..models.config import ModelConfig
from ..training.config import DEFAULT_MAX_SAMPLES, TrainConfig
from .arguments import (
    UNSET,
    _bound,
    _count,
    _count_list,
    _counts,
    _default,
    _non_negative_float,
    _number,
    _path,
    _positive_float,
    _seed,
    _threads,
)

EXIT_USAGE = 2


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


#: The commands whose options are added only when the command is chosen, by the function that
#: "module:function" names: their help quotes the defaults of functions in modules that import
#: torch (seconds), which the other commands' help and ``aevb --help`` should not wait for.
DEFERRED_OPTIONS = {
    "evaluate": "aevb.cli.command_options:_add_evaluate_options",
    "reproduce": "aevb.cli.command_options:_add_reproduce_options",
    "sample": "aevb.cli.command_options:_add_sample_options",
    "export": "aevb.cli.command_options:_add_export_options",
}


class _Commands(argparse._SubParsersAction):
    """The subcommands; the chosen one gets its :data:`DEFERRED_OPTIONS` before it parses the rest."""

    def parser_of(self, command: str) -> argparse.ArgumentParser:
        """The parser of ``command``, with all its options."""
        parser = self.choices[command]
        if command in DEFERRED_OPTIONS and not getattr(parser, "complete", False):
            module, _, function = DEFERRED_OPTIONS[command].partition(":")
            getattr(importlib.import_module(module), function)(parser)
            parser.complete = True
        return parser

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values and values[0] in self.choices:
            self.parser_of(values[0])
        super().__call__(parser, namespace, values, option_string)


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
        help="mnist-sample (embedded, offline), mnist, binarized-mnist, frey, a path to "
        "a .npy/.npz file, or a folder of PNG/JPEG images (grey or RGB; other modes such as RGBA or "
        "palette are converted to RGB; one subfolder per class gives labels; files whose names "
        f"begin with a dot are skipped) (default: {DEFAULT_DATASET})",
    )
    data.add_argument(
        "--image-size",
        dest="data.image_size",
        nargs=2,
        type=_count,
        metavar=("H", "W"),
        default=UNSET,
        help="resize every image of a --dataset folder to H×W pixels (default: none; the images "
        "must then all have one size)",
    )
    data.add_argument(
        "--split-seed",
        dest="data.split_seed",
        type=_seed,
        metavar="SEED",
        default=UNSET,
        help="seed of the random 80/10/10 train/valid/test split of your own data (a folder or a "
        f".npy file), kept in the run (default: {USER_SPLIT_SEED}); the named datasets keep their splits",
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
        "--stream",
        dest="data.stream",
        action="store_true",
        default=UNSET,
        help="read a .npy file memory-mapped, each minibatch's rows as they are needed, instead of "
        "loading it: data larger than memory (under torchrun each process reads its own rows) "
        "(default: off)",
    )
    data.add_argument(
        "--binarize",
        dest="training.binarize",
        choices=("none", "dynamic"),
        default=UNSET,
        help=f"dynamic: a fresh Bernoulli draw of each image every time it is used (default: {t('binarize')})",
    )
    data.add_argument(
        "--minibatches",
        dest="training.minibatches",
        choices=MINIBATCH_ORDERS,
        default=UNSET,
        help="Algorithm 1's random minibatches: with-replacement (M rows drawn independently every step, as the "
        f"authors' code draws them) or shuffled (passes through a fresh permutation) (default: {t('minibatches')})",
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
        choices=("normal", "anglepy", "glorot"),
        default=UNSET,
        help="normal: every parameter from N(0, σ²) (§5); anglepy: the same, but the encoder's log σ² head "
        "and the decoder's output biases at zero (the authors' code); glorot: Glorot-uniform weights, zero "
        "biases, a Bernoulli decoder's output bias at the logit of the mean training image "
        f"(Burda et al.'s code) (default: {m('init')})",
    )
    model.add_argument(
        "--init-std",
        dest="model.init_std",
        type=_positive_float,
        default=UNSET,
        help=f"σ of the normal initialisation (default: {m('init_std')}: §5's N(0, 0.01) as the authors' code "
        "reads it, a standard deviation; see docs/results.md)",
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
        choices=("aevb", "wake-sleep", "wake-sleep-unclipped", "mcem", "full-vb"),
        default=UNSET,
        help="learning algorithm: AEVB (Algorithm 1), a baseline of §5 — wake-sleep "
        "(wake-sleep-unclipped: without the authors' clipping of Gaussian dreams to [0, 1]), or "
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
        choices=OPTIMIZER_NAMES,
        default=UNSET,
        help="optimiser: adagrad-warmup (§5's Adagrad as the authors' code runs it: squared gradients summed "
        "for 100 steps before the first update), adagrad (torch's, no warm-up), adam, adam-iwae-code (Adam as "
        "Burda et al.'s code runs it: β1 = 0.99, second moments from 1, moments one step late, ε on the "
        f"minibatch sum's gradient) (default: {t('optimizer')})",
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
        choices=("constant", "iwae", "iwae-code"),
        default=UNSET,
        help="step size over the run: constant (§5), or iwae: Burda et al.'s eight stages of "
        "3^i passes at step size × 10^(-i/7), stretched over the run; iwae-code: the same, each "
        f"stage's factor rounded to two figures as their code has it (default: {t('schedule')})",
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
        "--selection-epochs",
        dest="training.selection_epochs",
        type=_positive_float,
        default=UNSET,
        help="passes through the training set per candidate when choosing the step size: §5's \"first few "
        f'iterations" (default: {t("selection_epochs"):g}; at least 200 minibatches, at most half the run)',
    )
    algorithm.add_argument(
        "--selection-steps",
        dest="training.selection_steps",
        type=_count,
        default=UNSET,
        help="iterations per candidate instead of --selection-epochs (default: none, --selection-epochs decides)",
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
        choices=(AUTO_ENGINE, *ENGINE_NAMES),
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
        choices=LOGGER_NAMES,
        default=UNSET,
        help="also report every evaluation point (metrics, sample and reconstruction images) and "
        "the run's settings to this experiment tracker (repeatable; each is an extra: pip install "
        "'aevb[wandb]'; default: none)",
    )
    output.add_argument(
        "--tensorboard",
        dest="run.loggers",
        action="append_const",
        const="tensorboard",
        default=UNSET,
        help="also write TensorBoard scalars, images and hyperparameters (default: off)",
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


def _build_parser() -> argparse.ArgumentParser:
    formatter = _HelpFormatter
    parser = _Parser(
        prog="aevb", description="Auto-Encoding Variational Bayes (Kingma & Welling, 2014).", formatter_class=formatter
    )
    parser.add_argument("--version", action="version", version=f"aevb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, action=_Commands)
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
        help="run directories written by aevb train, or saved models (aevb export --format hub; several: "
        "each in turn, its result printed as it finishes; --json prints a list, one result a line)",
    )

    commands.add_parser(
        "reproduce",
        formatter_class=formatter,
        help="reproduce a figure of the paper",
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
    compare.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="+", help="run directories written by aevb train, or saved models"
    )
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
    sample.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by aevb train, or a saved model")

    export = commands.add_parser(
        "export",
        formatter_class=formatter,
        help="write a run's model out: a Hugging Face directory, or an ONNX or TorchScript graph",
        description="Write the model of a finished run (or of a directory saved before) out. --format hub: "
        "the directory OUT as model.save_pretrained writes it (model.safetensors, model.json, config.json "
        "and a model card written from the run: data, architecture, training, bounds, test log p(x) "
        "when evaluated, the command that trained it); aevb evaluate, sample and export read it as they "
        "read a run, VAE.from_pretrained(OUT) loads it. --format onnx or torchscript: a graph with a "
        "dynamic batch dimension, of the decoder (z (batch, J) -> the decoder's mean (batch, D): pixel "
        "probabilities for a Bernoulli decoder) or of the encoder (x (batch, D) -> mean and log_variance "
        "(batch, J) of q(z|x)); conditional models and non-Gaussian posteriors' encoders do not export.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by aevb train, or a saved model")
    return parser
