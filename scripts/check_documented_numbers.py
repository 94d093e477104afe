"""Check that the numbers README.md and docs/*.md quote are the numbers in the committed result files.

A documented number names its source in an HTML comment right after it (invisible on GitHub and in
the site):

    **86.12**<!-- from benchmarks/results/nll_binarized_mnist.json#models[model=iwae-vae].negative_log_likelihood -->
    −106.3<!-- from docs/figures/fig2.csv#rows[dataset=mnist,latent_dim=20,method=aevb,samples=10000000].test_bound -->

The part after ``#`` is a path into the file: dotted keys, ``[N]`` for the N-th element of a list,
and ``[key=value,...]`` for the one element whose fields have those values. A CSV file is a list
``rows`` of records (strings compared as written). ``neg`` after the path negates the value (a
−log p(x) quoted from a log p(x)). The file's value, rounded to the decimals the text shows, must
equal the text's number (thousands separators and the typographic minus are read as written).

    python scripts/check_documented_numbers.py            # every README.md and docs/*.md number
    python scripts/check_documented_numbers.py FILE.md    # only these

Prints one line per mismatch and exits 1 if there is one; tests/test_documented_numbers.py runs it.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: A number (optionally bold, signed with - or the typographic −, with , thousands separators)
#: followed by its source comment.
SOURCED = re.compile(
    r"(?P<number>[−-]?\d[\d,]*(?:\.\d+)?)(?:\*\*)?\s*<!--\s*from\s+(?P<file>[^#\s]+)#(?P<path>\S+)"
    r"(?P<operations>(?:\s+(?:neg|[*/][\d.e+-]+))*)\s*-->"
)
_STEP = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


@dataclass(frozen=True)
class Mismatch:
    """A documented number that is not its source's value (or whose source cannot be read)."""

    document: Path
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}: {self.why}"


def _load(path: Path) -> object:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return {"rows": list(csv.DictReader(handle))}
    return json.loads(path.read_text())


def _matches(record: object, conditions: str) -> bool:
    if not isinstance(record, dict):
        return False
    for condition in conditions.split(","):
        key, _, wanted = condition.partition("=")
        value, wanted = record.get(key.strip()), wanted.strip()
        number = _number_or_none(value)
        if value is None or not (str(value) == wanted or number is not None and number == _number_or_none(wanted)):
            return False
    return True


def _number_or_none(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _apply(operation: str, value: float) -> float:
    factor = float(operation[1:])
    return value * factor if operation[0] == "*" else value / factor


def lookup(data: object, path: str) -> object:
    """The value at ``path`` (see the module docstring) in ``data``; KeyError naming the step that fails."""
    for key, selector in _STEP.findall(path):
        if key:
            if not isinstance(data, dict) or key not in data:
                raise KeyError(f"no key {key!r}")
            data = data[key]
        elif selector.isdigit():
            if not isinstance(data, list) or int(selector) >= len(data):
                raise KeyError(f"no element [{selector}]")
            data = data[int(selector)]
        else:
            found = [record for record in data if _matches(record, selector)] if isinstance(data, list) else []
            if len(found) != 1:
                raise KeyError(f"[{selector}] selects {len(found)} elements, not one")
            data = found[0]
    return data


def check_document(document: Path, root: Path = ROOT) -> tuple[int, list[Mismatch]]:
    """(how many sourced numbers ``document`` has, the ones that do not match their source)."""
    mismatches, count, cache = [], 0, {}
    for line_number, line in enumerate(document.read_text().splitlines(), start=1):
        for match in SOURCED.finditer(line):
            count += 1
            text = match.group("number")
            try:
                source = root / match.group("file")
                if source not in cache:
                    cache[source] = _load(source)
                value = float(lookup(cache[source], match.group("path")))  # type: ignore[arg-type]
            except (OSError, ValueError, KeyError, TypeError) as error:
                mismatches.append(Mismatch(document, line_number, text, f"{match.group('file')}: {error}"))
                continue
            for operation in match.group("operations").split():
                value = -value if operation == "neg" else _apply(operation, value)
            shown = float(text.replace(",", "").replace("−", "-"))
            decimals = len(text.partition(".")[2])
            if round(value, decimals) != shown:
                why = (
                    f"{match.group('file')}#{match.group('path')} holds {value!r}, which rounds to {value:.{decimals}f}"
                )
                mismatches.append(Mismatch(document, line_number, text, why))
    return count, mismatches


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md (not the drafts)."""
    return [root / "README.md", *sorted(path for path in (root / "docs").rglob("*.md") if "drafts" not in path.parts)]


def main(argv: list[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)] or documents()
    total, failures = 0, []
    for path in paths:
        count, mismatches = check_document(path)
        total += count
        failures += mismatches
    for mismatch in failures:
        print(mismatch)
    print(f"{total} documented numbers checked against their files, {len(failures)} do not match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
