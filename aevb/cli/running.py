"""Running a parsed ``aevb`` command: its implementation (:data:`aevb.cli.commands.COMMANDS`), with
every error the user can cause turned into one line and an exit status."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import AevbError, TrainingDiverged, TrainingInterrupted
from ..runs.layout import SUMMARY_FILE
from ..training.checkpoints import has_checkpoint
from ..training.reporting import one_line_warnings
from .commands import COMMANDS
from .flags import _in_flags
from .parser import EXIT_USAGE


def run_command(args: argparse.Namespace) -> int:
    """Run the command that ``args`` (:func:`aevb.cli.parse_arguments`) names; returns the exit status."""
    with one_line_warnings():
        status = _run_command(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One of several torchrun processes: everything is written and flushed; leave without
        # C++ static destructors, where torch 2.x's distributed runtime now and then aborts
        # ("terminate called without an active exception"; how often: docs/performance.md) and
        # would turn a finished run into a failed one.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


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
        if os.environ.get("RANK", "0") != "0":  # rank 0 says it, once
            return 128 + (getattr(interrupted, "signal", None) or signal.SIGTERM)
        if args.command == "train":
            run = getattr(args, "resume", None) or getattr(args, "out", None) or "RUN_DIR"
            how = f"aevb train --resume {run}"
        else:
            how = "the same command again"
        if not interrupted.samples and not any(interrupted.runs.values()):
            saved = "nothing trained yet to save (a run started again is the same run)"
        else:
            saved = "checkpoints saved" if len(interrupted.runs) > 1 else "checkpoint saved"
        print(f"aevb {args.command}: {interrupted}; {saved}. Continue with: {how}", file=sys.stderr)
        return 128 + (getattr(interrupted, "signal", None) or 2)
    except KeyboardInterrupt:  # outside the training loop, e.g. while the final figures are written
        print(f"aevb {args.command}: interrupted{_resume_hint(args, 'continue with')}", file=sys.stderr)
        return 130
    except OSError as error:
        # Disk full, permission denied, ...: the user's environment, not a bug.
        print(
            f"aevb {args.command}: error: {error.strerror or error}"
            + (f": {error.filename}" if getattr(error, "filename", None) else "")
            + _resume_hint(args),
            file=sys.stderr,
        )
        return EXIT_USAGE


def _resume_hint(args: argparse.Namespace, how: str = "once fixed, continue with") -> str:
    """How to continue a training that an OS error (a full disk) or a Ctrl-C outside the training
    loop stopped, when it has a checkpoint and no summary.json (which marks a finished run)."""
    run = _run_directory(args)
    if run is None:
        return ""
    try:
        resumable = has_checkpoint(run) and not os.path.exists(os.path.join(run, SUMMARY_FILE))
    except OSError:  # the run's path is what the error was about (a name too long): no hint
        return ""
    return f"; {how}: aevb train --resume {run}" if resumable else ""
