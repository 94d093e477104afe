"""Everything a run is checked for before its first step — and, through a run, before anything is
written: the algorithm against the model, several processes, the memory of one step, the engine on
the device, and a step-size selection that fits the budget. A run (:func:`aevb.runs.train_run`)
calls :func:`run_preflight` before it makes its directory and hands the result to the
:class:`~aevb.training.Trainer`, which then checks none of it again; a Trainer built without one
calls it itself."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch

from ..errors import AevbError
from ..models.build import build_model, check_buildable
from ..models.config import ModelConfig
from ..models.families import families_of
from ..validation import require_trainable_values
from .algorithm import Algorithm
from .config import TrainConfig
from .distributed import SINGLE_PROCESS, ProcessGroup, check_distributable
from .step_memory import require_training_step_memory
from .step_size import fit_to_budget


@dataclass(frozen=True)
class Preflight:
    """A run that passed :func:`run_preflight`: what was checked, and the training settings to use
    (the step-size selection fitted to the budget)."""

    model_config: ModelConfig | None  # None: a module of the user's own, with no ModelConfig
    config: TrainConfig
    algorithm: Algorithm
    device: torch.device
    world_size: int
    dataset_size: int

    def check_covers(
        self,
        model_config: ModelConfig | None,
        algorithm: Algorithm,
        device: torch.device,
        group: ProcessGroup,
        dataset_size: int,
    ) -> None:
        """A one-line error unless this preflight checked this very run (a Trainer given one
        trusts it instead of checking again)."""
        same_device = (
            device.type == self.device.type and None in (device.index, self.device.index) or device == self.device
        )
        if (
            model_config != self.model_config
            or algorithm is not self.algorithm
            or not same_device
            or group.world_size != self.world_size
            or dataset_size != self.dataset_size
        ):
            raise AevbError(
                "`preflight` was made for another model, algorithm, device or training set; "
                "leave it out and the Trainer checks this run itself"
            )


def run_preflight(
    model_config: ModelConfig | None,
    config: TrainConfig,
    algorithm: Algorithm,
    device: torch.device,
    dataset_size: int,
    group: ProcessGroup = SINGLE_PROCESS,
    per_point_measurements: bool = False,
    model: torch.nn.Module | None = None,
    splits: Mapping[str, torch.Tensor] = MappingProxyType({}),
    where: str | None = None,
) -> Preflight:
    """Check that ``algorithm`` can train the model of ``model_config`` with ``config`` on
    ``dataset_size`` training points, on ``device`` and ``group``'s processes; a one-line
    AevbError naming the setting otherwise; the data's values likewise. ``per_point_measurements``: something is measured at
    every evaluation point besides the bounds (it must run on one process). The engine is tried on
    ``model`` where it is built already, else on the model of ``model_config`` on the meta device:
    nothing is allocated. ``splits``: the data, by the name an error gives them, whose values must be
    finite (and in [0, 1] for a Bernoulli decoder or dynamic binarisation). ``where``: the file
    ``model_config`` was read from, named by an error about it."""
    likelihood = getattr(model_config, "likelihood", None)
    for name, values in splits.items():
        require_trainable_values(values, name, likelihood, config.binarize)
    if model_config is not None:
        check_buildable(model_config, where)  # the family pair, and the parameters in the host's memory
        algorithm.check_model(model_config)
    check_distributable(
        group, algorithm, config.batch_size, per_point_measurements, posterior=families_of(model_config)[0]
    )
    config = fit_to_budget(config, dataset_size, algorithm)
    # A step's L × M decoded rows cannot be streamed (the gradient needs them all).
    require_training_step_memory(
        model_config, config.batch_size, algorithm.num_samples, device, processes=group.world_size
    )
    if model is not None:
        algorithm.check_engine(model, device, next(model.parameters()).dtype, distributed=group.distributed)
    elif model_config is not None:
        with torch.device("meta"):
            algorithm.check_engine(build_model(model_config), device, distributed=group.distributed)
    return Preflight(model_config, config, algorithm, torch.device(device), group.world_size, dataset_size)
