"""What a training checkpoint (:mod:`aevb.training.checkpoints`) must be to be resumed: its
``state.json`` with fields of the right kinds (a hand edit is named in one line, not a traceback,
and never reaches a C kernel), and its state fitting the model and the run that continue from it:
the same weights, a generator state, a permutation of the training set, the optimiser's state of
every parameter."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..checkpoint import load_weights
from ..config import check_fields
from ..errors import AevbError
from .config import StepSizeTrial
from .optimizers import OPTIMIZERS
from .state import TrainingState

#: What state.json holds besides the optimiser's layout: checked against TrainingState's field
#: types (a hand-edited "samples": 1e400 or "trials": 3 is named, not a traceback).
JSON_FIELDS = (
    "samples",
    "steps",
    "step_size",
    "trials",
    "history",
    "training_seconds",
    "running_count",
    "position",
    "skipped_steps",
    "rollbacks",
    "initial_bound",
    "best_valid_bound",
    "best_samples",
    "evaluations_since_best",
    "stopped_early",
)


def check_state_fields(fields: dict, path: Path) -> None:
    """One-line errors naming ``path`` and the field for values of the wrong type, negative
    counts and a step size that is not a positive number."""
    check_fields(TrainingState, {name: fields[name] for name in JSON_FIELDS if name in fields}, str(path))
    for name in (
        "samples",
        "steps",
        "running_count",
        "position",
        "skipped_steps",
        "rollbacks",
        "evaluations_since_best",
    ):
        if fields.get(name, 0) < 0:
            raise AevbError(f"{path}: {name} must be a count (>= 0), got {fields[name]!r}")
    step_size = fields.get("step_size")
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise AevbError(f"{path}: step_size must be a positive number, got {step_size!r}")
    for trial in fields.get("trials", []):
        if not isinstance(trial, dict):
            raise AevbError(f"{path}: each of trials must be a JSON object, got {trial!r}")
        check_fields(StepSizeTrial, trial, f"{path}: trials")
    if not isinstance(fields.get("has_order", False), bool):
        raise AevbError(f"{path}: has_order must be true or false, got {fields['has_order']!r}")


def check_param_groups(layout, path: Path) -> None:
    """The optimiser's hyper-parameters as torch and the native kernels take them: numbers,
    flags, lists of numbers and parameter indices (a hand-edited ``"lr": "x"`` would otherwise
    reach a C kernel)."""
    groups = layout.get("param_groups") if isinstance(layout, dict) else None
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise AevbError(f"{path}: the optimiser state has no parameter groups")
    per_parameter = layout.get("state")
    if not isinstance(per_parameter, dict) or not all(
        isinstance(index, str)
        and index.isdecimal()
        and isinstance(slots, dict)
        and all(
            not isinstance(value, dict) or set(value) == {"tensor"} and isinstance(value["tensor"], str)
            for value in slots.values()
        )
        for index, slots in per_parameter.items()
    ):
        raise AevbError(f"{path}: the optimiser state must map parameter numbers to their state")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for group in groups:
        for key, value in group.items():
            if key == "params":
                ok = isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
            elif key in ("lr", "initial_lr", "weight_decay", "eps", "lr_decay", "initial_accumulator_value"):
                ok = number(value) and value >= 0
            else:
                ok = (
                    value is None
                    or isinstance(value, bool)
                    or number(value)
                    or (isinstance(value, list) and all(number(item) for item in value))
                )
            if not ok:
                raise AevbError(f"{path}: optimiser setting {key} has the invalid value {value!r}")


def check_checkpoint_fits(
    state: TrainingState,
    model: torch.nn.Module,
    dataset_size: int,
    run_dir,
    optimizer: str | None = None,
    group_sizes: list[int] | None = None,
) -> None:
    """A one-line error unless ``state`` can continue training ``model`` on ``dataset_size`` points:
    the same weights by name, shape and dtype, all finite; a generator state; a permutation of the
    training set; the optimiser's state, finite, of each parameter's shape. With ``optimizer`` (a
    name of :data:`~aevb.training.optimizers.OPTIMIZERS`) and ``group_sizes`` (the parameters in
    each of its groups, as the run makes them), also every slot it needs and its groups."""
    load_weights(model, state.model, f"the checkpoint in {run_dir}", "its model")
    if state.rng.dtype != torch.uint8 or state.rng.dim() != 1:
        raise AevbError(f"the checkpoint in {run_dir} has no valid generator state")
    if any(metrics.samples > state.samples for metrics in state.history):
        raise AevbError(f"the checkpoint in {run_dir} records evaluations beyond its own {state.samples:,} samples")
    if state.order is not None and (state.order.shape != (dataset_size,) or not 0 <= state.position <= dataset_size):
        raise AevbError(f"the checkpoint in {run_dir} is for a training set of another size")
    if state.order is not None and (
        state.order.dtype != torch.int64
        or not torch.equal(torch.sort(state.order).values, torch.arange(dataset_size, device=state.order.device))
    ):
        raise AevbError(f"the checkpoint in {run_dir} holds an order of the training set that is no permutation of it")
    _check_optimizer_state(state.optimizer, list(model.parameters()), run_dir, optimizer, group_sizes)


def _check_optimizer_state(
    layout: dict, parameters: list[torch.Tensor], run_dir, optimizer: str | None, group_sizes: list[int] | None
) -> None:
    where = f"the checkpoint in {run_dir}"
    groups = [group.get("params", []) for group in layout.get("param_groups", [])]
    if group_sizes is not None and [len(group) for group in groups] != group_sizes:
        raise AevbError(
            f"{where} has optimiser groups of {[len(group) for group in groups]} parameters; "
            f"the run's are {group_sizes}"
        )
    # torch matches the state to the parameters by their place in the groups
    place = {index: position for position, index in enumerate(index for group in groups for index in group)}
    if len(place) != sum(map(len, groups)) or not set(place) <= set(range(len(parameters))):
        raise AevbError(f"{where} numbers the optimiser's parameters wrongly")
    slots_by_index = layout.get("state", {})
    if not set(slots_by_index) <= set(place):
        raise AevbError(f"{where} has optimiser state for an unknown parameter")
    factory = OPTIMIZERS.get(optimizer)
    needed = set()
    if factory is not None:
        fresh = factory([torch.zeros(1, requires_grad=True)])  # the settings and state it keeps
        for group in layout.get("param_groups", []):
            _check_group_like(group, fresh.param_groups[0], where)
        # An optimiser that makes its state with itself (Adagrad) looks for every parameter's on resume.
        if fresh.state and set(slots_by_index) != set(place):
            raise AevbError(f"{where} lacks the optimiser state of some parameters")
        needed = {"step", *factory.STATE}
    for index, slots in slots_by_index.items():
        if slots and not needed <= set(slots):
            raise AevbError(f"{where} lacks optimiser state {sorted(needed - set(slots))}")
        for key, value in slots.items():
            shape = () if key == "step" else parameters[place[index]].shape
            if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.shape != shape:
                raise AevbError(f"{where} has optimiser state {key} of the wrong type or shape")
            if not torch.isfinite(value).all() or key in NON_NEGATIVE_STATE and (value < 0).any():
                raise AevbError(f"{where} has NaN, infinite or negative optimiser state ({key})")


#: Optimiser state that counts or sums squares: negative values are a hand edit (and give NaN).
NON_NEGATIVE_STATE = ("step", "sum", "exp_avg_sq", "max_exp_avg_sq")


def _check_group_like(group: dict, fresh: dict, where: str) -> None:
    """A one-line error unless the optimiser group ``group`` has every setting of ``fresh`` (a new
    optimiser's group), each of the same kind: a flag, a number, a list of as many numbers."""
    for key, default in fresh.items():
        if key == "params":
            continue
        value = group.get(key, ...)
        if isinstance(default, bool) or default is None:
            ok = value is None or isinstance(value, bool)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, list) and len(value) == len(default)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise AevbError(
                f"{where}: optimiser setting {key} must be like {default!r}, got "
                f"{'nothing' if value is ... else repr(value)}"
            )
