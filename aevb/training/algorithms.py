"""Every learning algorithm a run can name (the ``algorithm`` setting): AEVB (Algorithm 1), the
baselines the paper compares it with (§5: wake-sleep, Monte Carlo EM; :mod:`aevb.baselines`) and
full variational Bayes (App. F). Each class says its name and what it can do as class attributes
(:class:`~aevb.training.algorithm.Algorithm`) and takes its settings from the run's
:class:`~aevb.training.TrainConfig` (``from_config``)::

    trainer = Trainer(model, train, config, algorithm=make_algorithm("wake-sleep", config))

(This module is not imported by :mod:`aevb.training` itself: the baselines build on it.)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from ..baselines.mcem import MonteCarloEM
from ..baselines.wake_sleep import WakeSleep, WakeSleepUnclippedDreams
from ..errors import AevbError
from .algorithm import AEVB, Algorithm
from .config import TrainConfig
from .full_vb import FullVariationalBayes

#: The algorithm classes by the name the ``algorithm`` setting (and ``--algorithm``) uses. MCEM
#: uses the paper's settings (10 leapfrog steps, 5 weight updates, 90% acceptance) and, having no
#: bound to choose a step size by, needs ``step_size``.
ALGORITHMS: Mapping[str, type[Algorithm]] = MappingProxyType(
    {
        algorithm.name: algorithm
        for algorithm in (AEVB, WakeSleep, WakeSleepUnclippedDreams, MonteCarloEM, FullVariationalBayes)
    }
)


def algorithm_class(name: object) -> type[Algorithm]:
    """The class of the algorithm called ``name``; a one-line error naming the choices otherwise."""
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise AevbError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def make_algorithm(name: str, config: TrainConfig) -> Algorithm:
    """The algorithm called ``name`` (a key of :data:`ALGORITHMS`) with the settings of ``config``."""
    return algorithm_class(name).from_config(config)


def trains_encoder(name: str) -> bool:
    """Whether the algorithm called ``name`` trains the encoder, i.e. its ``has_bound`` (Monte
    Carlo EM trains none, so evaluation must not start from it). A name not in
    :data:`ALGORITHMS` (a run written by a newer aevb) is taken to have trained one."""
    algorithm = ALGORITHMS.get(name)
    return True if algorithm is None else algorithm.has_bound


__all__ = ["ALGORITHMS", "algorithm_class", "make_algorithm", "trains_encoder"]
