"""How long the ``aevb`` command takes to answer ``--version``, ``--help`` and ``train --help``:
``python benchmarks/cli_startup.py``.

Each command runs as a user runs it, a fresh ``python -m aevb ...`` process (the console script
does the same), and is timed from start to exit. Its peers, timed in the same run: ``python -c
pass`` (the interpreter's own start-up, a floor no command goes below) and ``python -c "import
torch"`` (what every command waited for before issue 30). With ``--baseline DIR`` the same
commands run on the aevb of another checkout (e.g. one at the commit before the change), put
in its directory and first on ``PYTHONPATH`` (the commands themselves run this checkout's aevb). Round after round each command runs once, the order rotating, so they
all share whatever the machine's speed does meanwhile; the report gives medians over the rounds
with their range, the ratios to the peers, and the issue's target (under 0.3 s). ``--json``
(default ``benchmarks/results/cli_startup_<date>.json``) keeps everything, schema
``aevb-cli-startup/1``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import cpu_flags, cpu_name  # (beside this script: benchmarks/machine_info.py)

HERE = Path(__file__).resolve().parent
SCHEMA = "aevb-cli-startup/1"
TARGET_SECONDS = 0.3  # issue 30, item 5: "goal under 0.3 s on this machine"

#: The commands timed, by the name the report gives them: the arguments after ``python -m aevb``.
COMMANDS = {
    "aevb --version": ["--version"],
    "aevb --help": ["--help"],
    "aevb train --help": ["train", "--help"],
}

#: The peers, as Python code run by ``python -c``.
PEERS = {"python -c pass": "pass", 'python -c "import torch"': "import torch"}


def _time(command: list[str], checkout: Path) -> float:
    """Seconds from starting ``command`` in ``checkout`` (``python -m`` imports from there first) to
    its exit; an error if it fails."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=checkout, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cli_startup: {' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _machine() -> dict:
    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
    }


def measure(rounds: int, baseline: Path | None) -> dict:
    """Time every command and peer ``rounds`` times, interleaved; the report (schema ``SCHEMA``)."""
    checkout = HERE.parent
    runs = {name: ([sys.executable, "-c", code], checkout) for name, code in PEERS.items()}
    for name, arguments in COMMANDS.items():
        runs[name] = ([sys.executable, "-m", "aevb", *arguments], checkout)
        if baseline is not None:
            runs[f"{name} (baseline)"] = ([sys.executable, "-m", "aevb", *arguments], baseline)
    names = list(runs)
    for command, environment in runs.values():  # once each, untimed: the file cache warm for all
        _time(command, environment)
    values: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            values[name].append(_time(*runs[name]))
    floor, torch_import = (statistics.median(values[name]) for name in PEERS)
    commands = {}
    for name in names:
        summary = _summary(values[name])
        if name not in PEERS:
            summary["over_python"] = summary["median"] / floor
            summary["over_import_torch"] = summary["median"] / torch_import
            summary["target_met"] = summary["median"] < TARGET_SECONDS
        commands[name] = summary
    return {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rounds": rounds,
        "baseline": None if baseline is None else str(baseline),
        "target_seconds": TARGET_SECONDS,
        "commands": commands,
    }


def report_text(report: dict) -> str:
    """The report as the terminal shows it."""
    machine = report["machine"]
    load = report["load_average"]
    lines = [
        f"# {report['schema']}  {report['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, python {machine['python']}, torch {machine['torch']}; "
        f"{report['rounds']} rounds; load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after",
        "",
        f"{'command':<34} {'median s':>9}  {'[min-max]':<15} {'/ python':>9} {'/ import torch':>15}",
    ]
    for name, summary in report["commands"].items():
        line = f"{name:<34} {summary['median']:>9.3f}  [{summary['min']:.3f}-{summary['max']:.3f}]"
        if "over_python" in summary:
            met = "met" if summary["target_met"] else "not met"
            line = f"{line:<61} {summary['over_python']:>8.2f}x {summary['over_import_torch']:>14.2f}x"
            if not name.endswith("(baseline)"):
                line += f"  (target < {report['target_seconds']} s: {met})"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11, help="runs of each command (default: 11)")
    parser.add_argument("--baseline", metavar="DIR", help="also time the aevb of this checkout (default: none)")
    parser.add_argument(
        "--json",
        type=Path,
        default=HERE / "results" / f"cli_startup_{datetime.date.today().isoformat()}.json",
        help="write the report here (default: benchmarks/results/cli_startup_<date>.json)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    report = measure(args.rounds, Path(args.baseline).resolve() if args.baseline else None)
    print(report_text(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
