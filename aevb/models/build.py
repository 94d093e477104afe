"""Which model a configuration describes: the one place that knows every kind of model, so that
the models themselves need not know each other (the variants build on :class:`aevb.models.vae.VAE`).

:func:`check_buildable` is exported here with :func:`build_model`: the checks a model's building
runs first, for a caller that must refuse a configuration before anything else happens (a run's
preflight, before its run directory is written)."""

from __future__ import annotations

from . import conditional, full_vb  # noqa: F401  (the kinds of VAE, defined before VAE.model_class_for looks)
from .buildable import check_buildable
from .config import ModelConfig
from .vae import VAE

__all__ = ["build_model", "check_buildable"]


def build_model(config: ModelConfig) -> VAE:
    """The model ``config`` describes: a :class:`VAE`; a conditional one when ``num_classes`` is set
    (:class:`aevb.models.conditional.ConditionalVAE`); with ``decoder_posterior="gaussian"`` the full-VB
    model of Appendix F (:class:`aevb.models.full_vb.FullVBVAE`).

    A configuration that cannot be built (a posterior/prior pair with an infinite KL, parameters
    beyond the host's memory) is a one-line AevbError before anything is allocated: every one of
    these classes runs :func:`check_buildable` first (in ``VAE.__init__``). Each class says which
    configurations it builds (:meth:`VAE.builds`)."""
    return VAE.model_class_for(config)(config)
