"""What was measured on a run after training, kept in the run: ``evaluations.jsonl``, one JSON
object per ``aevb evaluate`` (:func:`aevb.runs.evaluate_run`), appended as each finishes. An
importance-sampled log p(x) at k = 5000 takes minutes to hours; kept, it is shown by ``aevb
compare`` and read by anyone who looks at the run, instead of being lost with the terminal."""

from __future__ import annotations

import datetime
import json
import os
import warnings
from pathlib import Path

from .. import __version__
from ..checkpoint import named_os_error, open_no_follow, parse_json, read_text_file, strict_json
from ..errors import AevbError
from ..training.reporting import TrainingWarning

EVALUATIONS_FILE = "evaluations.jsonl"


def record_evaluation(run_dir: str | os.PathLike, result: dict, settings: dict, seconds: float) -> None:
    """Append ``result`` (an :func:`~aevb.runs.evaluate_run` result: nats per datapoint), the
    ``settings`` it was measured with, the wall ``seconds`` it took, the time and the aevb version
    to the run's evaluations.jsonl, on disk (fsync) before returning. A run that cannot be written
    (read-only, a full disk) keeps the result on the caller's side: a warning says it was not kept."""
    line = {
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "aevb_version": __version__,
        "settings": settings,
        **result,
        "seconds": seconds,
    }
    path = Path(run_dir) / EVALUATIONS_FILE
    try:
        with open_no_follow(path, "a") as stream:
            stream.write(json.dumps(strict_json(line)) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
    except (OSError, AevbError) as error:
        reason = named_os_error(error, path) if isinstance(error, OSError) else error
        warnings.warn(f"the evaluation was not kept in {path} ({reason})", TrainingWarning, stacklevel=2)


def read_evaluations(run_dir: str | os.PathLike) -> list[dict]:
    """The evaluations kept in a run, oldest first; none where it has no evaluations.jsonl. A line
    that is not a JSON object (cut off by a kill, edited by hand) is left out."""
    path = Path(run_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        try:
            entry = parse_json(line, f"{path} line {number}") if line.strip() else None
        except AevbError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def latest_log_likelihood(run_dir: str | os.PathLike, split: str = "test") -> dict | None:
    """The newest kept importance-sampled log p(x) of the run's final model on ``split``: its
    value, standard error, k and number of points; None where none was kept."""
    for entry in reversed(read_evaluations(run_dir)):
        if entry.get("split") == split and "log_likelihood" in entry and "checkpoint_samples" not in entry:
            return {
                "log_likelihood": entry["log_likelihood"],
                "log_likelihood_stderr": entry.get("log_likelihood_stderr"),
                "log_likelihood_samples": entry.get("log_likelihood_samples"),
                "num_datapoints": entry.get("num_datapoints"),
            }
    return None
