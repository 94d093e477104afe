"""The ``aevb`` command: train, evaluate and sample from variational auto-encoders.

Every user error ends in one line on stderr, ``aevb <command>: error: ...``, and exit status 2.

Parsing imports no torch (:mod:`.parser`), so ``aevb --help`` and ``aevb --version`` answer at
once; the commands (:mod:`.running`, which imports the library) are imported once the arguments
name one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .parser import _build_parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command and options of ``argv`` (default: the process's arguments); exits on ``--help``,
    ``--version`` and usage errors (one line, status 2), as argparse does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    args.argv = argv  # recorded in config.json: the command that made a run, also when called in-process
    return args


def load_command() -> Callable[[argparse.Namespace], int]:
    """The function that runs parsed arguments and returns the exit status; importing it imports
    torch and the library (seconds)."""
    from .running import run_command

    return run_command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aevb`` console script; returns the exit status."""
    args = parse_arguments(argv)
    return load_command()(args)
