"""Config files of a run, JSON or YAML: read into the settings that
:meth:`aevb.runs.RunSpec.from_settings` takes, and written back (``aevb train --print-config``).

YAML is parsed by PyYAML's safe loader (plain data only: no Python objects), so a file is data,
never code. Either format may hold a whole run's configuration (a run's config.json) or any
part of one; what a file leaves out, the library's defaults and the data decide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..checkpoint import parse_json, read_text_file
from ..choices import CONFIG_FORMATS
from ..errors import AevbError

#: The formats a config file may have, by its suffix; any other suffix is read as JSON.
YAML_SUFFIXES = (".yaml", ".yml")
FORMATS = CONFIG_FORMATS


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping a JSON or YAML config file holds (YAML for a ``.yaml``/``.yml`` suffix), with
    one-line errors naming the file: unreadable, malformed (YAML: with its line and column), not
    a mapping, or a key that is not a string."""
    text = read_text_file(path)
    if Path(path).suffix.lower() in YAML_SUFFIXES:
        value = _parse_yaml(text, path)
        kind = "YAML mapping"
    else:
        value = parse_json(text, path)
        kind = "JSON object"
    if not isinstance(value, dict):
        raise AevbError(f"{path} does not hold a {kind} (sections data, model, training, algorithm, run)")
    for section, settings in value.items():
        if not isinstance(section, str):
            raise AevbError(f"{path}: {section!r} is no section name (a string)")
        if isinstance(settings, dict) and not all(isinstance(name, str) for name in settings):
            raise AevbError(f"{path}: {section} has a setting whose name is no string")
    return value


def _parse_yaml(text: str, path: str | os.PathLike):
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise AevbError(f"{path} is not valid YAML{where}: {error.problem}") from None
    except (yaml.YAMLError, RecursionError) as error:
        raise AevbError(
            f"{path} is not valid YAML ({str(error).splitlines()[0] if str(error) else 'nested too deeply'})"
        ) from None


def config_text(config: dict, format: str = "json") -> str:
    """``config`` (JSON-ready values) as the text of a config file in ``format`` (json or yaml),
    which :func:`read_config_file` reads back to the same values."""
    if format not in FORMATS:
        raise AevbError(f"unknown config format {format!r}; choose one of {', '.join(FORMATS)}")
    plain = json.loads(json.dumps(config))  # tuples as lists: what either format holds
    if format == "yaml":
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    return json.dumps(plain, indent=2) + "\n"
