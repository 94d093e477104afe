"""Training checkpoints on disk: a run's whole :class:`~aevb.training.TrainingState`, so that a
killed run continues exactly (``aevb train --resume RUN_DIR``).

Layout, inside the run directory::

    checkpoints/
        step-000012000/state.safetensors   every tensor: weights, optimiser state, generator
                                           state, the epoch's permutation, the algorithm's state
        step-000012000/state.json          everything else: counters, step size, trials, metrics
        latest.json                        which checkpoint is the newest

A checkpoint is written into a temporary directory, flushed to disk, and renamed into place; only
then does ``latest.json`` (itself replaced atomically) point at it, and only then are checkpoints
beyond the retention (the last ``keep``) deleted. (The best model by validation bound is no
checkpoint: the run keeps it as a model, :mod:`aevb.runs.best`.) A finished run keeps its newest
checkpoint alone (:func:`keep_only_newest`), from which it can be extended to a larger budget. A
crash at any instant therefore leaves the previous checkpoint intact and named in
``latest.json``; a checkpoint that is unreadable anyway (a disk fault) is skipped for the newest
readable one. Tensors are safetensors, everything else JSON: nothing is unpickled. What a checkpoint
must be to be resumed (its fields' kinds, its fit to the model and run) is checked by
:mod:`aevb.training.checkpoint_checks`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..checkpoint import apply_umask, atomic_write_json, check_format_version, named_os_error, read_json
from ..errors import AevbError
from .checkpoint_checks import check_param_groups, check_state_fields
from .config import Metrics, StepSizeTrial
from .state import TrainingState

CHECKPOINT_FORMAT_VERSION = 1
DIRECTORY = "checkpoints"
LATEST = "latest.json"
TENSORS, FIELDS = "state.safetensors", "state.json"


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch.optim state dict → tensors by flat name, and the JSON-able rest (with tensor slots)."""
    tensors, per_param = {}, {}
    for index, values in state["state"].items():
        slots = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
                slots[key] = {"tensor": f"optimizer.{index}.{key}"}
            else:
                slots[key] = value
        per_param[str(index)] = slots
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def _join_optimizer(layout: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {
        int(index): {
            key: tensors[value["tensor"]] if isinstance(value, dict) else value for key, value in slots.items()
        }
        for index, slots in layout["state"].items()
    }
    return {"state": state, "param_groups": layout["param_groups"]}


def save_checkpoint(
    run_dir: str | os.PathLike, state: TrainingState, keep: int = 2, configuration: str | None = None
) -> Path:
    """Write ``state`` as ``checkpoints/step-N`` of ``run_dir`` atomically; keep the last ``keep``.
    ``configuration`` identifies the run's settings (see
    :func:`load_checkpoint`). Returns the checkpoint's directory."""
    root = Path(run_dir) / DIRECTORY
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise named_os_error(error, root) from None
    name = f"step-{state.steps:09d}"
    optimizer_tensors, optimizer_layout = _split_optimizer(state.optimizer)
    tensors = {f"model.{key}": value for key, value in state.model.items()}
    tensors |= optimizer_tensors
    tensors |= {f"algorithm.{key}": value for key, value in state.algorithm.items()}
    tensors["rng"] = state.rng
    tensors["running_sum"] = state.running_sum.reshape(1)
    if state.order is not None:
        tensors["order"] = state.order
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    fields = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "samples": state.samples,
        "steps": state.steps,
        "step_size": state.step_size,
        "trials": [vars(t) for t in state.trials],
        "history": [m.to_dict() for m in state.history],
        "training_seconds": state.training_seconds,
        "running_count": state.running_count,
        "position": state.position,
        "optimizer": optimizer_layout,
        "has_order": state.order is not None,
        "skipped_steps": state.skipped_steps,
        "rollbacks": state.rollbacks,
        "configuration": configuration,
        "initial_bound": state.initial_bound,
        "best_valid_bound": state.best_valid_bound,
        "best_samples": state.best_samples,
        "evaluations_since_best": state.evaluations_since_best,
        "stopped_early": state.stopped_early,
    }
    try:
        temporary = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    except OSError as error:
        raise named_os_error(error, root) from None
    try:
        apply_umask(temporary, directory=True)
        for filename, data in ((TENSORS, save(tensors)), (FIELDS, (json.dumps(fields) + "\n").encode())):
            try:
                with open(temporary / filename, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
            except OSError as error:
                raise named_os_error(error, root / name / filename) from None
        target = root / name
        if target.exists():  # the same step written again (a resumed run): replace it
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_directory(root)
    for abandoned in _checkpoints(root):  # later than this one: a future that was rolled back from
        if abandoned.name > name:
            shutil.rmtree(abandoned, ignore_errors=True)
    atomic_write_json(root / LATEST, {"latest": name})
    _retain(root, keep, {name})
    return target


def keep_only_newest(run_dir: str | os.PathLike) -> None:
    """Delete every checkpoint of ``run_dir`` but the newest (a finished run's final state, which
    :func:`aevb.runs.resume_run` extends to a larger budget)."""
    root = Path(run_dir) / DIRECTORY
    newest = _read_latest(root).get("latest")
    if isinstance(newest, str) and (root / newest).is_dir():
        _retain(root, 1, {newest})


def _fsync_directory(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _read_latest(root: Path) -> dict:
    """latest.json's entries; it only points at checkpoints, so one unreadable or of the wrong
    kind (a hand edit) is left out, as if never written."""
    try:
        latest = read_json(root / LATEST)
    except AevbError:
        return {}
    kinds = {"latest": str}  # (earlier versions also named their best checkpoint here: ignored)
    return {
        key: value
        for key, value in latest.items()
        if key in kinds and isinstance(value, kinds[key]) and not isinstance(value, bool)
    }


def _checkpoints(root: Path) -> list[Path]:
    return sorted(path for path in root.glob("step-*") if path.is_dir())


def _retain(root: Path, keep: int, protected: set) -> None:
    for stale in root.glob(".step-*"):  # temporaries of an interrupted write
        shutil.rmtree(stale, ignore_errors=True)
    for path in _checkpoints(root)[:-keep] if keep > 0 else _checkpoints(root):
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return bool(_checkpoints(Path(run_dir) / DIRECTORY))


def newest_checkpoint(run_dir: str | os.PathLike) -> tuple[str, int] | None:
    """The newest checkpoint's name and the training samples it was taken at, read from its JSON
    alone: cheap enough to ask every few seconds while the run trains (a progress report). None
    when there is none to read, e.g. while the newest one is being replaced."""
    root = Path(run_dir) / DIRECTORY
    name = _read_latest(root).get("latest")
    if not isinstance(name, str):
        return None
    try:
        return name, int(json.loads((root / name / FIELDS).read_text())["samples"])
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None


def load_checkpoint(run_dir: str | os.PathLike, configuration: str | tuple[str, ...] | None = None) -> TrainingState:
    """The newest readable checkpoint of ``run_dir`` (the one ``latest.json`` names, else the newest
    that reads), as a :class:`TrainingState`; a one-line error when there is none.

    With ``configuration`` (one identity, or several that all mean this run), a checkpoint written
    under other settings (it names another configuration; checkpoints of aevb before 0.1.0's run identities name none) is refused: it
    belongs to another run, e.g. one that was replaced without removing its checkpoints.
    """
    root = Path(run_dir) / DIRECTORY
    candidates = _checkpoints(root)
    if not candidates:
        raise AevbError(f"{run_dir} has no checkpoint to resume from")
    named = _read_latest(root).get("latest")
    ordered = sorted(candidates, key=lambda path: (path.name == named, path.name), reverse=True)
    problems = []
    for path in ordered:
        try:
            return _read(path, configuration)
        except AevbError as error:
            problems.append(str(error))
    raise AevbError(f"no readable checkpoint in {root}: {problems[0]}")


def _read(path: Path, configuration: str | tuple[str, ...] | None = None) -> TrainingState:
    fields = read_json(path / FIELDS)
    check_format_version(fields, CHECKPOINT_FORMAT_VERSION, path / FIELDS)
    written_for = fields.get("configuration")
    accepted = (configuration,) if isinstance(configuration, str) else configuration
    if accepted is not None and written_for is not None and written_for not in accepted:
        raise AevbError(
            f"{path} was written by a run with other settings than {path.parent.parent / 'config.json'} "
            "(the run was replaced or its config.json edited); it cannot be resumed"
        )
    check_state_fields(fields, path / FIELDS)
    check_param_groups(fields.get("optimizer"), path / FIELDS)
    try:
        tensors = load_file(str(path / TENSORS))
    except (FileNotFoundError, SafetensorError, OSError, ValueError) as error:
        raise AevbError(f"{path / TENSORS} is not a readable checkpoint ({error})") from None
    running_sum = tensors.get("running_sum")
    if running_sum is None or running_sum.numel() != 1 or not running_sum.is_floating_point():
        raise AevbError(f"{path / TENSORS}: running_sum must be one number")
    try:
        return TrainingState(
            samples=int(fields["samples"]),
            steps=int(fields["steps"]),
            step_size=float(fields["step_size"]),
            trials=[StepSizeTrial(**t) for t in fields["trials"]],
            history=[Metrics.from_dict(m) for m in fields["history"]],
            training_seconds=float(fields["training_seconds"]),
            running_sum=tensors["running_sum"].reshape(()),
            running_count=int(fields["running_count"]),
            model={key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")},
            optimizer=_join_optimizer(fields["optimizer"], tensors),
            rng=tensors["rng"],
            order=tensors["order"] if fields["has_order"] else None,
            position=int(fields["position"]),
            algorithm={
                key[len("algorithm.") :]: value for key, value in tensors.items() if key.startswith("algorithm.")
            },
            skipped_steps=int(fields.get("skipped_steps", 0)),
            rollbacks=int(fields.get("rollbacks", 0)),
            initial_bound=None if fields.get("initial_bound") is None else float(fields["initial_bound"]),
            best_valid_bound=None if fields.get("best_valid_bound") is None else float(fields["best_valid_bound"]),
            best_samples=None if fields.get("best_samples") is None else int(fields["best_samples"]),
            evaluations_since_best=int(fields.get("evaluations_since_best", 0)),
            stopped_early=bool(fields.get("stopped_early", False)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise AevbError(f"{path} is an incomplete checkpoint ({error!r})") from None
