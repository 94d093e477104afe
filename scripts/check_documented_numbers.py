"""Check that the numbers README.md and docs/*.md quote are the numbers in the committed result files.

A documented number names its source in an HTML comment right after it (invisible on GitHub and in
the site):

    **86.12**<!-- from benchmarks/results/nll_binarized_mnist.json#models[model=iwae-vae].negative_log_likelihood -->
    −106.3<!-- from docs/figures/fig2.csv#rows[dataset=mnist,latent_dim=20,method=aevb,samples=10000000].test_bound -->
    0.056<!-- from benchmarks/results/cli_startup_2026-12-06.json#commands["aevb --help"].median -->

The part after ``#`` is a path into the file: dotted keys, ``[N]`` for the N-th element of a list,
``["key"]`` (or ``['key']``) for a key with spaces, dots or brackets in it, and ``[key=value,...]`` for the one
element whose fields have those values (a value with a comma or bracket in quotes:
``[name="aevb --help"]``). A CSV file is a list ``rows`` of records (strings compared as written).
Operations after the path apply in order: ``neg`` negates the value (a −log p(x) quoted from a
log p(x)), ``abs`` takes its magnitude, ``*N`` and ``/N`` scale it (seconds quoted in minutes,
a fraction as a percentage), and ``over OPERAND``, ``minus OPERAND`` and ``plus OPERAND`` combine
it with another value, a path in the same file, ``FILE#path`` or a number (a ratio, a gap between
two results, the distance to a target). The file's value, rounded to the decimals the text shows, must equal the text's number
(thousands separators and the typographic minus are read as written).

Numbers that no file backs are reported too (``--unsourced``): a decimal number, a number with a
unit of time, memory, speed or nats, a ratio (``3.2×``), a percentage, or a number in a table's
cell, outside code, that has no source comment. What is not a measurement is not reported:
section, equation, figure and session numbers, versions, dates, times of day, powers of ten,
architectures (784-500-20), the paper's constants (the step sizes 0.01, 0.02, 0.1) and numbers in
table columns whose heading names a setting. A number that is the paper's own, or otherwise not a
measurement, says so in a comment right after it, ``<!-- paper -->`` or ``<!-- not measured -->``.

    python scripts/check_documented_numbers.py              # every README.md and docs/*.md number
    python scripts/check_documented_numbers.py FILE.md      # only these
    python scripts/check_documented_numbers.py --unsourced  # and the numbers with no source
    python scripts/check_documented_numbers.py --update     # rewrite stale numbers from their files

Prints one line per mismatch (and per unsourced number) and exits 1 if there is one;
tests/test_documented_numbers.py runs it. ``--update`` writes each stale number as its file's value,
rounded to the decimals the text shows (a sign that flips shows as ``−``), and leaves the words
around it to the writer: prose that says "leads by" may now need to say "trails by".
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_QUOTED = r"\"[^\"]*\"|'[^']*'"
_PATH = rf"(?:{_QUOTED}|[^\s\"'])+"
_OPERATION = rf"neg|abs|[*/][\d.e+-]+|(?:over|minus|plus)\s+{_PATH}"
#: A number (optionally bold, signed with - or the typographic −, with , thousands separators)
#: followed by its source comment.
SOURCED = re.compile(
    rf"(?P<number>[−-]?\d[\d,]*(?:\.\d+)?)(?:\*\*)?\s*<!--\s*from\s+(?P<file>[^#\s]+)#(?P<path>{_PATH})"
    rf"(?P<operations>(?:\s+(?:{_OPERATION}))*)\s*-->"
)
#: A number that says it is not a measurement.
MARKED = re.compile(r"(?P<number>[−-]?\d[\d,]*(?:\.\d+)?)(?:\*\*)?\s*<!--\s*(?:paper|not measured)\s*-->")
_STEP = re.compile(rf"\.?(?:(?P<key>[^.\[\]\"']+)|\[(?P<selector>(?:{_QUOTED}|[^\]\"'])*)\])")
_CONDITION = re.compile(rf"\s*(?P<key>{_QUOTED}|[^=,\"']+?)\s*=\s*(?P<value>{_QUOTED}|[^,\"']*?)\s*(?:,|$)")


@dataclass(frozen=True)
class Mismatch:
    """A documented number that is not its source's value (or whose source cannot be read)."""

    document: Path
    line: int
    text: str
    why: str
    #: (start, end) of the number in its line and the text its source gives; None if unreadable
    replacement: tuple[int, int, str] | None = None

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}: {self.why}"


def shown_as(value: float, text: str) -> str:
    """``value`` written as ``text`` writes its number: the same decimals, separators and minus sign."""
    decimals = len(text.partition(".")[2])
    written = f"{value + 0.0:{',' if ',' in text else ''}.{decimals}f}"
    if written.lstrip("-").strip("0.,") == "":
        written = written.lstrip("-")  # no "−0.0"
    return written.replace("-", "−") if written.startswith("-") and not text.startswith("-") else written


def _load(path: Path) -> object:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return {"rows": list(csv.DictReader(handle))}
    return json.loads(path.read_text())


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text.strip()


def _conditions(selector: str) -> list[tuple[str, str]]:
    conditions, position = [], 0
    while position < len(selector):
        match = _CONDITION.match(selector, position)
        if not match or match.end() == position:
            raise KeyError(f"cannot read the selector [{selector}]")
        conditions.append((_unquote(match.group("key")), _unquote(match.group("value"))))
        position = match.end()
    return conditions


def _matches(record: object, conditions: list[tuple[str, str]]) -> bool:
    if not isinstance(record, dict):
        return False
    for key, wanted in conditions:
        value = record.get(key)
        number = _number_or_none(value)
        if value is None or not (str(value) == wanted or number is not None and number == _number_or_none(wanted)):
            return False
    return True


def _number_or_none(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _steps(path: str) -> list[tuple[str, str]]:
    """("key", name), ("index", N) or ("select", selector) for each step of ``path``."""
    steps, position = [], 0
    while position < len(path):
        match = _STEP.match(path, position)
        if not match or match.end() == position:
            raise KeyError(f"cannot read the path {path!r} from {path[position:]!r}")
        position = match.end()
        if match.group("key") is not None:
            steps.append(("key", match.group("key")))
            continue
        selector = match.group("selector").strip()
        if selector.isdigit():
            steps.append(("index", selector))
        elif re.fullmatch(_QUOTED, selector):
            steps.append(("key", selector[1:-1]))
        else:
            steps.append(("select", selector))
    return steps


def lookup(data: object, path: str) -> object:
    """The value at ``path`` (see the module docstring) in ``data``; KeyError naming the step that fails."""
    for kind, step in _steps(path):
        if kind == "key":
            if not isinstance(data, dict) or step not in data:
                raise KeyError(f"no key {step!r}")
            data = data[step]
        elif kind == "index":
            if not isinstance(data, list) or int(step) >= len(data):
                raise KeyError(f"no element [{step}]")
            data = data[int(step)]
        else:
            conditions = _conditions(step)
            found = [record for record in data if _matches(record, conditions)] if isinstance(data, list) else []
            if len(found) != 1:
                raise KeyError(f"[{step}] selects {len(found)} elements, not one")
            data = found[0]
    return data


class _Sources:
    """The result files a document reads, each loaded once."""

    def __init__(self, root: Path) -> None:
        self.root, self.cache = root, {}

    def value(self, file: str, path: str) -> float:
        source = self.root / file
        if source not in self.cache:
            self.cache[source] = _load(source)
        return float(lookup(self.cache[source], path))  # type: ignore[arg-type]

    def evaluate(self, file: str, path: str, operations: str) -> float:
        """The value at ``file#path`` after ``operations`` (see the module docstring)."""
        value = self.value(file, path)
        for operation in re.findall(_OPERATION, operations):
            name, _, operand = operation.partition(" ")
            operand = operand.strip()
            if name == "neg":
                value = -value
            elif name == "abs":
                value = abs(value)
            elif name in ("over", "minus", "plus"):
                other_file, hash_sign, other_path = operand.partition("#")
                other = _number_or_none(operand)
                if other is None:
                    other = self.value(other_file, other_path) if hash_sign else self.value(file, operand)
                value = value / other if name == "over" else value - other if name == "minus" else value + other
            else:
                factor = float(operation[1:])
                value = value * factor if operation[0] == "*" else value / factor
        return value


def check_document(document: Path, root: Path = ROOT) -> tuple[int, list[Mismatch]]:
    """(how many sourced numbers ``document`` has, the ones that do not match their source)."""
    mismatches, count, sources = [], 0, _Sources(root)
    for line_number, line in enumerate(document.read_text().splitlines(), start=1):
        for match in SOURCED.finditer(line):
            count += 1
            text, file, path = match.group("number", "file", "path")
            try:
                value = sources.evaluate(file, path, match.group("operations"))
            except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as error:
                mismatches.append(Mismatch(document, line_number, text, f"{file}: {error}"))
                continue
            shown = float(text.replace(",", "").replace("−", "-"))
            decimals = len(text.partition(".")[2])
            if round(value, decimals) != shown:
                why = f"{file}#{path}{match.group('operations')} is {value!r}, which rounds to {value:.{decimals}f}"
                span = (*match.span("number"), shown_as(value, text))
                mismatches.append(Mismatch(document, line_number, text, why, span))
    return count, mismatches


def update_document(document: Path, mismatches: list[Mismatch]) -> int:
    """Rewrite ``document``'s stale numbers as their sources give them; returns how many changed."""
    fixes = sorted((m.line, *m.replacement) for m in mismatches if m.replacement is not None)
    if not fixes:
        return 0
    lines = document.read_text().split("\n")
    for line, start, end, text in reversed(fixes):  # right to left: earlier spans stay where they were
        lines[line - 1] = lines[line - 1][:start] + text + lines[line - 1][end:]
    document.write_text("\n".join(lines))
    return len(fixes)


# ---- numbers with no source ----------------------------------------------------------------------

#: A number as prose writes it: thousands separators, decimals, a sign.
_NUMBER = re.compile(r"(?<![\w.,/·^])[−-]?\d(?:[\d,]*\d)?(?:\.\d+)?(?![\d])")
_UNIT = re.compile(
    r"\s*(?:(?:ms|µs|ns|s|sec|seconds?|min|minutes?|h|hours?|days?|MB|MiB|GB|GiB|kB|KB|TB|"
    r"nats?|samples/s|points/s|GFLOP/s|cycles)\b|%|×(?!\s*\d))|k\b"
)
#: What a number is when it is not a measurement, read from the text before it ...
_NOT_MEASURED_BEFORE = re.compile(
    r"(?:§|\b(?:eqs?\.|Fig(?:ure)?s?\.?|Tables?|Appendix|App\.|sessions?|issues?|items?|Example|Python|PyTorch|"
    r"torch|pythae|aevb|GCC|OpenMP|CUDA|version|Algorithm|every|Burda et al\.,?|Kingma & Welling,?|\(|ICLR)\s*)$"
    r"|(?:[=<>]=\s*|\bv)$|[\d⁰¹²³⁴⁵⁶⁷⁸⁹][-/:]$|\de[+-]?$|[\d⁰¹²³⁴⁵⁶⁷⁸⁹]\s*×\s*$|×\s*10$"
    r"|(?:§|\b(?:eqs?\.|Figs?\.|Figures?|sessions?|items?|issues?|every))\s*[\d.]+\s*–\s*$"
)
# ... and after it.
_NOT_MEASURED_AFTER = re.compile(
    r"^(?:\.\d|[⁰¹²³⁴⁵⁶⁷⁸⁹]|[-/:][\d⁰¹²³⁴⁵⁶⁷⁸⁹]|\s*×\s*[\d⁰¹²³⁴⁵⁶⁷⁸⁹]|e[+-]?\d|\s*–\s*[\d.]+\s*×\s*10)"
)
#: The paper's constants: §5's step sizes and initialisation, Adam's 0.001.
PAPER_CONSTANTS = frozenset({"0.01", "0.02", "0.1", "0.001"})
#: Table columns that hold settings, not results.
SETTING_COLUMN = re.compile(
    r"^(?:|Nz|Ntrain|N train|threads|rounds|σ|init σ|step size|k|L|M|samples|training samples|points|rows|launch|"
    r"panel|data|run|model|scenario|measure|setting|table|code|batch size|hidden units|command|part|estimator|"
    r"method|peer|family|posterior|its standard prior|MNIST run: prior, estimator|what|what changed|file|paper|"
    r"module|parameters|#|their code|authors' code|aevb|aevb before|aevb now)(?:\s*\(.*\))?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Unsourced:
    """A number in a document that looks measured and names no source."""

    document: Path
    line: int
    text: str
    context: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}: …{self.context}…"


def _masked(line: str, in_span: bool = False) -> tuple[str, bool]:
    """``line`` with code spans, comments, links' targets and HTML tags blanked (positions kept), and
    whether a code span is still open at its end (``in_span``: one was open at its start)."""

    def blank(match: re.Match) -> str:
        return " " * len(match.group(0))

    line = re.sub(r"<!--.*?-->", blank, line)
    if in_span:
        if "`" not in line:
            return " " * len(line), True
        line = re.sub(r"^[^`]*`", blank, line)
    line = re.sub(r"(`+).*?\1", blank, line)
    in_span = "`" in line
    line = re.sub(r"`.*$", blank, line)
    line = re.sub(r"\]\([^)]*\)", blank, line)
    line = re.sub(r"<[a-zA-Z/][^>]*>", blank, line)
    return re.sub(r"https?://\S+", blank, line), in_span


def _cells(line: str) -> list[tuple[int, int]]:
    """The (start, end) of each cell of a Markdown table row."""
    bars = [i for i, char in enumerate(line) if char == "|" and (i == 0 or line[i - 1] != "\\")]
    return [(start + 1, end) for start, end in zip(bars, bars[1:])]


def unsourced(document: Path) -> list[Unsourced]:
    """The numbers of ``document`` that look measured and have no source comment (see the module docstring)."""
    found, in_code, in_include, in_span, header, setting_columns = [], False, False, False, None, set()
    lines = document.read_text().splitlines()
    for line_number, line in enumerate(lines, start=1):
        stripped = line.strip()
        in_span = in_span and bool(stripped)  # (a code span ends with its paragraph)
        if re.match(r"(```|~~~)", stripped):
            in_code = not in_code
            continue
        if stripped.startswith("{%"):
            in_include = "%}" not in stripped
            continue
        if in_include:
            in_include = "%}" not in stripped
            continue
        if in_code or stripped.startswith("--8<--"):
            continue
        covered = [match.span("number") for pattern in (SOURCED, MARKED) for match in pattern.finditer(line)]
        masked, in_span = _masked(line, in_span)
        cells = _cells(masked) if stripped.startswith("|") else []
        if cells and header is None:
            header = [masked[start:end].strip().strip("*") for start, end in cells]
            setting_columns = {i for i, name in enumerate(header) if SETTING_COLUMN.match(name)}
            continue
        if not cells:
            header = None
        elif re.fullmatch(r"[|\s:-]+", stripped):
            continue
        for match in _NUMBER.finditer(masked):
            start, end = match.span()
            if any(start <= a < end or a <= start < b for a, b in covered):
                continue
            text = match.group(0)
            before, after = masked[:start], masked[end:]
            column = next((i for i, (a, b) in enumerate(cells) if a <= start < b), None)
            if _NOT_MEASURED_BEFORE.search(before) or _NOT_MEASURED_AFTER.match(after):
                continue
            if re.match(r"\d{4}-\d{2}", masked[start:]) or re.match(r"\d{1,2}:\d{2}", masked[start:]):
                continue  # a date or a time of day
            if text.lstrip("−-") in PAPER_CONSTANTS:
                continue
            decimal = "." in text
            # (in a table, ``Nz = 3``, ``ν = 3`` or ``Laplace(0, 1)`` names a setting)
            in_table = (
                column is not None and column not in setting_columns and not re.search(r"(=|\d,|\.\.\.,)\s*$", before)
            )
            if not (decimal or _UNIT.match(after) or in_table):
                continue
            found.append(Unsourced(document, line_number, text, line[max(0, start - 40) : end + 30].strip()))
    return found


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md (not the drafts)."""
    return [root / "README.md", *sorted(path for path in (root / "docs").rglob("*.md") if "drafts" not in path.parts)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check documented numbers against the result files they name.")
    parser.add_argument("documents", nargs="*", type=Path, help="default: README.md and docs/*.md")
    parser.add_argument("--unsourced", action="store_true", help="also report numbers that name no source")
    parser.add_argument("--update", action="store_true", help="rewrite stale numbers from their sources")
    arguments = parser.parse_args(argv)
    for path in arguments.documents:
        if not path.is_file():
            parser.error(f"{path}: no such file")
    total, failures, missing = 0, [], []
    for path in arguments.documents or documents():
        count, mismatches = check_document(path)
        total += count
        if arguments.update and mismatches:
            updated = update_document(path, mismatches)
            print(f"{path}: {updated} numbers rewritten from their files")
            mismatches = [mismatch for mismatch in mismatches if mismatch.replacement is None]
        failures += mismatches
        if arguments.unsourced:
            missing += unsourced(path)
    for problem in [*failures, *missing]:
        print(problem)
    print(f"{total} documented numbers checked against their files, {len(failures)} do not match")
    if arguments.unsourced:
        print(f"{len(missing)} numbers have no source")
    return 1 if failures or missing else 0


if __name__ == "__main__":
    sys.exit(main())
