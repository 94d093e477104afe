"""The reparameterisable families of paper §2.4 as approximate posteriors and priors.

* :mod:`.inverse_cdf` — Logistic, Rayleigh, Reciprocal, Gompertz (z = F⁻¹(u; φ));
* :mod:`.location_scale` — symmetric Triangular, elliptical multivariate Student-t;
* :mod:`.composition` — Erlang (a sum of exponentials);
* :mod:`.kl` — closed-form KL divergences torch lacks, registered with ``register_kl``;
* :mod:`.builders` — the encoder head → distribution maps (torch's own reparameterisable
  distributions for the families not above) and the standard priors;
* :mod:`.registry` — every family by its CLI name (``--posterior``, ``--prior``), its route,
  support and builders, and the compatibility rules.
"""

from .composition import Erlang
from .encoder import FamilyEncoder, posterior_centre, prior_icdf
from .inverse_cdf import Gompertz, Logistic, Rayleigh, Reciprocal
from .location_scale import MultivariateStudentT, Triangular
from .registry import (
    FAMILIES,
    PAPER_POSTERIOR,
    PAPER_PRIOR,
    Family,
    check_estimator,
    check_hmc_prior,
    check_pair,
    default_estimator,
    families_of,
    get_family,
    has_closed_form_kl,
    prior_names,
)

__all__ = [
    "Erlang",
    "Gompertz",
    "Logistic",
    "Rayleigh",
    "Reciprocal",
    "MultivariateStudentT",
    "Triangular",
    "FAMILIES",
    "PAPER_POSTERIOR",
    "PAPER_PRIOR",
    "Family",
    "families_of",
    "FamilyEncoder",
    "check_hmc_prior",
    "check_pair",
    "check_estimator",
    "default_estimator",
    "get_family",
    "has_closed_form_kl",
    "posterior_centre",
    "prior_icdf",
    "prior_names",
]
