"""Which flag of a command sets which library setting: library errors name settings (written
`like_this`), and the command line shows them as its flags."""

from __future__ import annotations

import argparse
import functools
import re

from .parser import _build_parser


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
    for action in subcommands.parser_of(command)._actions:
        if action.option_strings:
            # A setting of a run's spec is "section.name": errors name it by either.
            for name in (action.dest, action.dest.rsplit(".", 1)[-1]):
                flags.setdefault(name, action.option_strings[0])
    return flags


#: Library settings that no single option of the command sets.
FLAG_ALIASES = {("evaluate", "log_likelihood_samples"): "--nll (--k)", ("sample", "num_samples"): "--num"}


def _in_flags(message: str, command: str) -> str:
    """A library message with its settings (written `name`) turned into the command's flags."""
    return re.sub(r"`([a-z_][a-z0-9_]*)`", lambda match: _flag(command, match.group(1)), message)
