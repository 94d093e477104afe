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

from .. import threads  # noqa: F401  (sets MKL's strict reproducible mode before MKL's first call)
from .build import build_model, check_buildable
from .config import ModelConfig
from .vae import VAE

__all__ = ["ModelConfig", "VAE", "build_model", "check_buildable"]
