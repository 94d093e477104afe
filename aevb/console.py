"""The ``aevb`` console script.

Parsing the command line imports no torch (``aevb --help`` and ``aevb --version`` answer at once);
the command then imports torch and matplotlib, a few seconds on a slow machine. Ctrl-C pressed
meanwhile would surface as a KeyboardInterrupt wherever the import happened to be (a traceback,
or a library turning it into some other error); nothing has been written yet, so the process
leaves at once, in one line with exit status 130. Once the command runs, Ctrl-C is Python's
again: training turns it into a checkpoint and a resume hint (aevb.runs), everything else into
one line (aevb.cli).
"""

import os
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


def _leave_at_once(signum, frame) -> None:
    os.write(2, b"aevb: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def main() -> int:
    previous = signal.signal(signal.SIGINT, _leave_at_once)
    try:
        from .cli import load_command, parse_arguments

        args = parse_arguments()
        run_command = load_command()  # the heavy imports of every command, under the handler above
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        return run_command(args)
    except KeyboardInterrupt:  # between two of the command's own handlers
        print("aevb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
