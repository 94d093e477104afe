"""Configurations are dataclasses that round-trip through JSON (run directories, model files).

A file read back may have been edited by hand, truncated or written by someone else, so
``from_dict`` checks every value against its field's annotation before the dataclass's own checks
run: a string where a count belongs is a one-line error naming the field, not a ``TypeError``
deep inside training (or a ctypes error inside a C kernel).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import TypeVar

from .errors import AevbError

Config = TypeVar("Config", bound="JsonConfig")


def conforms(value, hint) -> bool:
    """Whether the JSON value ``value`` is of type ``hint`` (int, float, str, bool, ``X | None``,
    ``tuple[int, ...]``, ``tuple[int, int]``). Booleans are not numbers here, integers are floats,
    and JSON lists stand for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return all(conforms(item, arguments[0]) for item in value)
        return len(arguments) == len(value) and all(conforms(item, kind) for item, kind in zip(value, arguments))
    if origin is list:
        return isinstance(value, list) and all(conforms(item, typing.get_args(hint)[0]) for item in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type this module does not know: the dataclass checks it


def describe(hint) -> str:
    """``int | None`` → "an integer or null": what a field holds, for an error message."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(hint))
    if origin is tuple or origin is list:
        arguments = typing.get_args(hint)
        return f"a list of {describe(arguments[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@functools.cache
def field_types(cls: type) -> dict[str, object]:
    """The resolved annotations of a dataclass's fields (the modules use postponed annotations)."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def check_fields(cls: type, values: dict, where: str) -> None:
    """A one-line error, naming ``where`` and the field, unless every value fits its field's type."""
    for name, hint in field_types(cls).items():
        if name in values and not conforms(values[name], hint):
            raise AevbError(f"{where}: {name} must be {describe(hint)}, got {values[name]!r}")


def read_from(where: str, error: AevbError) -> AevbError:
    """``error``, a check's one-line message, for a value read from ``where`` (a file, a section):
    the checks name a setting as a caller passes it (`name`, which the CLI shows as its flag), but
    this value came from ``where``, so the field is named there."""
    return AevbError(f"{where}: {str(error).replace('`', '')}")


class JsonConfig:
    """Mixin for dataclass configs: ``to_dict`` for JSON, ``from_dict`` that rejects unknown keys
    and values of the wrong type."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[Config], values: dict, where: str | None = None) -> Config:
        """Rebuild from JSON; ``where`` (a file, a section) prefixes the one-line errors."""
        where = where or cls.__name__
        if not isinstance(values, dict):
            raise AevbError(f"{where} must be a JSON object, got {values!r}")
        known = set(field_types(cls))
        unknown = set(values) - known
        if unknown:
            raise AevbError(f"{where} has unknown keys {sorted(unknown)}: written by a newer aevb?")
        required = [
            field.name
            for field in dataclasses.fields(cls)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in values]
        check_fields(cls, values, where)
        if missing:
            raise AevbError(f"{where} lacks {', '.join(missing)}")
        try:
            return cls(**values)
        except AevbError as error:
            raise read_from(where, error) from None
        except (TypeError, ValueError, OverflowError) as error:
            raise AevbError(f"{where}: {error}") from None
