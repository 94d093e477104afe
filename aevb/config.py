"""Configurations are dataclasses that round-trip through JSON (run directories, model files)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from .errors import AevbError

Config = TypeVar("Config", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclass configs: ``to_dict`` for JSON, ``from_dict`` that rejects unknown keys."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[Config], values: dict) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise AevbError(f"{cls.__name__} has unknown keys {sorted(unknown)}: written by a newer aevb?")
        try:
            return cls(**values)
        except TypeError as error:
            raise AevbError(f"bad {cls.__name__}: {error}") from None
