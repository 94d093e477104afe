"""The options of ``aevb evaluate``, ``aevb reproduce``, ``aevb sample`` and ``aevb export``, added to their parsers
only when the command is chosen (:data:`aevb.cli.parser.DEFERRED_OPTIONS`): their help quotes
the defaults of the functions that do the work (:func:`aevb.runs.evaluate_run`,
:func:`aevb.runs.sample_run`, :func:`aevb.experiments.reproduce`), in modules that import torch,
which ``aevb --help`` and ``aevb train --help`` should not wait for."""

from __future__ import annotations

import argparse
import functools
import inspect

from ..evaluation.importance_sampling import PROTOCOL_SAMPLES
from ..experiments import EXPERIMENTS, fig3
from ..experiments import reproduce as reproduce_figure
from ..experiments.fig3 import DEFAULT_MCEM_STEP_SIZE
from ..runs import evaluate_run, sample_run
from ..runs.export import EXPORT_FORMATS, GRAPH_PARTS, export_run
from ..runs.loading import MODEL_CHOICES
from .arguments import (
    UNSET,
    _choice_of,
    _count,
    _label,
    _non_negative_float,
    _parameter_default,
    _path,
    _positive_float,
    _seed,
    _threads,
)

#: What --checkpoint takes: a run's models other than its final one (which is read without it).
CHECKPOINT_CHOICES = tuple(choice for choice in MODEL_CHOICES if choice != "final")


def _add_checkpoint_option(parser: argparse.ArgumentParser, verb: str) -> None:
    """--checkpoint [latest|best]: which of a run's models ``verb`` reads instead of its final one."""
    parser.add_argument(
        "--checkpoint",
        nargs="?",
        const="latest",
        type=_choice_of(CHECKPOINT_CHOICES, "RUN_DIR"),
        metavar="{" + ",".join(CHECKPOINT_CHOICES) + "}",
        default=UNSET,
        help=f"{verb} the run's latest checkpoint (a run still training, or one that was stopped; "
        "the default when no value is given), or its best model by validation bound "
        "(default: off, the finished run's model)",
    )


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
    _add_checkpoint_option(evaluate, "evaluate")
    _add_data_options(evaluate)


def _add_reproduce_options(reproduce: argparse.ArgumentParser) -> None:
    reproduce.description = (
        "Train the runs behind one of the paper's figures (resumable: complete runs in OUT are "
        "kept) and draw it, with the numbers behind it as CSV/JSON. "
        + "; ".join(f"{name}: {experiment.summary}" for name, experiment in EXPERIMENTS.items())
        + "."
    )
    r = functools.partial(_parameter_default, reproduce_figure)
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


def _add_sample_options(sample: argparse.ArgumentParser) -> None:
    d = functools.partial(_parameter_default, sample_run)
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
    _add_checkpoint_option(sample, "sample the model of")


def _add_export_options(export: argparse.ArgumentParser) -> None:
    e = functools.partial(_parameter_default, export_run)
    export.add_argument(
        "--format", choices=EXPORT_FORMATS, default=UNSET, help=f"what to write (default: {e('format')})"
    )
    export.add_argument(
        "--part",
        choices=tuple(GRAPH_PARTS),
        default=UNSET,
        help="onnx, torchscript: which network (default: decoder)",
    )
    export.add_argument(
        "-o",
        "--out",
        type=_path,
        metavar="PATH",
        default=UNSET,
        help="the file (onnx, torchscript; default: RUN_DIR/PART.onnx or RUN_DIR/PART.pt) or the "
        "directory (hub; needed)",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        default=UNSET,
        help="replace the file or saved model --out names if it exists (default: off, refused)",
    )
