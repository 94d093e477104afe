"""The models (§3, App. C and the paper's extensions): the VAE and its configuration, the
networks, the distributions of §2.4 and App. B, the other posterior and prior families, the
conditional VAE, full VB's model (App. F), and factor analysis, the exact yardstick.

* :mod:`.vae` — the VAE of §3: Gaussian encoder, Bernoulli or Gaussian decoder, N(0, I) prior
* :mod:`.config` — :class:`ModelConfig`, every model's settings, each checked against its domain
* :mod:`.buildable` — the sizes a configuration implies and :func:`check_buildable` (family pair, memory)
* :mod:`.networks` — MLP and convolutional networks, the bounded log-variance; :mod:`.activations`
* :mod:`.distributions` — prior, posterior and decoder distributions; App. B's KL
* :mod:`.families` — the §2.4 families (inverse CDF, location-scale, composition) and their KLs
* :mod:`.conditional`, :mod:`.full_vb`, :mod:`.factor_analysis` — the other models
* :mod:`.build` — which model a configuration names
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:  # what type checkers and the API reference see; at run time __getattr__ imports them
    from .build import build_model, check_buildable
    from .config import ModelConfig
    from .vae import VAE


# Imported on first use (PEP 562): :mod:`.config` imports no torch, so the command line can quote
# ModelConfig's defaults in its help without waiting for the networks.
_LAZY = {"ModelConfig": "config", "VAE": "vae", "build_model": "build", "check_buildable": "build"}


__getattr__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["ModelConfig", "VAE", "build_model", "check_buildable"]
