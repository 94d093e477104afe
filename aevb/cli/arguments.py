"""The command line's value types: each parses one option's text or says in one line what it expected;
an option left out (:data:`UNSET`), and the library's default that its help quotes instead."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math

from ..cpus import available_cpus
from ..training.config import SEED_LIMIT

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


def _path(text: str) -> str:
    """A file or directory to write; an empty one would silently become the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


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


def _count_list(text: str) -> tuple[int, ...]:
    """Positive counts separated by commas, one or more: 32 or 32,64."""
    return tuple(_count(part) for part in text.split(","))


def _bound(text: str) -> float | None:
    """A bound ≥ 0 on |log σ²|; 0 means none (the library's None: the paper's unbounded
    parameterisation)."""
    return _non_negative_float(text) or None


def _label(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class label 0, 1, ..., got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a class label 0, 1, ..., got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


_positive_float = _number(0.0, inclusive=False)
_non_negative_float = _number(0.0, inclusive=True)


def _choice_of(choices: tuple[str, ...], follows: str):
    """An argparse type for one of ``choices``; anything else is named with a hint that ``follows``
    (a positional argument, such as RUN_DIR) goes before the option, whose value is optional."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"expected one of {', '.join(choices)} or nothing, got {text!r} ({follows} goes before this option)"
            )
        return text

    return parse
