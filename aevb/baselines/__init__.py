"""The algorithms the paper compares AEVB with (§5), as plug-ins for :class:`aevb.training.Trainer`.

* :class:`WakeSleep` — wake-sleep (Hinton et al., 1995) with the VAE's encoder as recognition
  model (Fig. 2, Fig. 3);
* :class:`MonteCarloEM` — Monte Carlo EM with HMC posterior samples, no encoder (App. E, Fig. 3).

``ALGORITHMS`` maps the names the command line uses to factories taking the
:class:`~aevb.training.TrainConfig`::

    trainer = Trainer(model, train, config, algorithm=ALGORITHMS["wake-sleep"](config))
"""

from __future__ import annotations

from typing import Callable

from ..errors import AevbError
from ..training.full_vb import FullVariationalBayes
from ..training import AEVB, Algorithm, TrainConfig
from .mcem import MonteCarloEM
from .wake_sleep import WakeSleep

#: Algorithm factories by name. Wake-sleep takes L (wake samples per datapoint) from the config;
#: MCEM uses the paper's settings (10 leapfrog steps, 5 weight updates, 90% acceptance) and, having
#: no bound to choose a step size by, needs ``config.step_size``. Full VB (App. F, not a baseline
#: but trained by the same machinery) puts a Gaussian posterior on the decoder's parameters.
ALGORITHMS: dict[str, Callable[[TrainConfig], Algorithm]] = {
    "aevb": lambda config: AEVB(config.estimator, config.num_samples, config.engine),
    "wake-sleep": lambda config: WakeSleep(num_samples=config.num_samples),
    "mcem": lambda config: MonteCarloEM(),
    "full-vb": lambda config: FullVariationalBayes(config.prior_precision, config.num_samples, config.engine,
                                                   config.estimator),
}


def make_algorithm(name: str, config: TrainConfig) -> Algorithm:
    """The algorithm called ``name`` (a key of :data:`ALGORITHMS`) for ``config``."""
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise AevbError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}") from None
    return factory(config)


def trains_encoder(name: str, config: TrainConfig) -> bool:
    """Whether the algorithm called ``name`` trains the encoder, i.e. its ``has_bound`` (Monte
    Carlo EM trains none, so evaluation must not start from it). A name not in
    :data:`ALGORITHMS` (a run written by a newer aevb) is taken to have trained one."""
    factory = ALGORITHMS.get(name)
    return True if factory is None else factory(config).has_bound


__all__ = ["ALGORITHMS", "MonteCarloEM", "WakeSleep", "make_algorithm", "trains_encoder"]
