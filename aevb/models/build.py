"""Which model a configuration describes: the one place that knows every kind of model, so that
the models themselves need not know each other (the variants build on :class:`aevb.models.vae.VAE`)."""

from __future__ import annotations

from .conditional import ConditionalVAE
from .full_vb import FullVBVAE
from .vae import VAE
from .config import ModelConfig


def build_model(config: ModelConfig) -> "VAE":
    """The model ``config`` describes: a :class:`VAE`; a conditional one when ``num_classes`` is set
    (:class:`aevb.models.conditional.ConditionalVAE`); with ``decoder_posterior="gaussian"`` the full-VB
    model of Appendix F (:class:`aevb.models.full_vb.FullVBVAE`)."""
    if config.num_classes is not None:
        return ConditionalVAE(config)
    if config.decoder_posterior == "gaussian":
        return FullVBVAE(config)
    return VAE(config)
