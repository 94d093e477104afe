"""The reparameterisable families of §2.4 by their command-line names (``--posterior``,
``--prior``): each family's route, support and encoder head, its posterior and standard prior (as
:mod:`.builders` makes them), and which posterior/prior pairs have a finite KL.

A posterior can only be paired with a prior of the same support (a positive posterior with a
positive prior, ...): otherwise KL(q ‖ p) = ∞. Bounded posteriors (uniform, triangular,
reciprocal, Pareto) lie inside the real line or the positive half-line and pair with those
priors. The Cauchy posterior has no mean: only priors whose log-density grows logarithmically
(Cauchy, Student-t) give it a finite KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.distributions import Distribution, kl_divergence

from ...errors import AevbError
from ..config import ModelConfig
from . import builders
from . import kl as _registered_kls  # noqa: F401  (registers the closed-form KLs)

ROUTES = ("inverse-cdf", "location-scale", "composition")  # §2.4's three routes
SUPPORTS = ("real", "positive", "unit-interval", "simplex")


@dataclass(frozen=True)
class Family:
    """One reparameterisable family of §2.4 as an approximate posterior and as a prior.

    ``posterior(raw (M, num_outputs(J)), bound)`` → q with batch shape (M,), event shape (J,);
    ``prior(J, device, dtype)`` → p with batch shape (), event shape (J,), or None when the family
    has no standard member that serves as a prior here (``prior_description`` says why).
    """

    name: str
    route: str  # one of ROUTES
    support: str  # support of the posterior (the enclosing one if bounded)
    parameters: tuple[str, ...]  # per-latent-dimension parameters, in head order
    build: Callable[..., Distribution]
    prior_builder: Callable[..., Distribution] | None
    prior_description: str
    # E|z|^r is finite for r up to this, whatever the parameters: a prior whose −log density grows like |z|^r needs r ≤
    # this
    finite_moments: float = math.inf
    prior_needs_moment: float = 0.0  # that r of the prior (0: it grows like log|z|)
    prior_support: str | None = None  # support of the prior, when it differs from the posterior's
    extra_outputs: Callable[[int], int] | None = None  # non-factorised families: outputs beyond blocks

    def num_outputs(self, latent_dim: int) -> int:
        """How many unconstrained encoder outputs one datapoint's posterior takes."""
        if self.extra_outputs is not None:
            return self.extra_outputs(latent_dim)
        return len(self.parameters) * latent_dim

    def posterior(self, raw: torch.Tensor, bound: float | None = None) -> Distribution:
        """q(z|x) from the encoder's unconstrained outputs ``raw`` (..., num_outputs(J))."""
        return self.build(raw, bound)

    def prior(self, latent_dim: int, device=None, dtype=torch.float32) -> Distribution:
        """The standard prior p(z) of this family, event shape (J,)."""
        if self.prior_builder is None:
            raise AevbError(f"{self.name} has no standard prior ({self.prior_description}); choose another `prior`")
        zeros = torch.zeros(latent_dim, device=device, dtype=dtype)
        return self.prior_builder(zeros)

    @property
    def support_as_prior(self) -> str:
        return self.prior_support or self.support


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        # §2.4 location-scale (with the paper's own Gaussian first)
        Family(
            "gaussian",
            "location-scale",
            "real",
            ("mean", "log-variance"),
            builders.gaussian_posterior,
            builders.gaussian_prior,
            "N(0, I)",
            prior_needs_moment=2,
        ),
        Family(
            "full-covariance-gaussian",
            "location-scale",
            "real",
            ("mean", "log-variance", "cholesky-off-diagonal"),
            builders.full_covariance_gaussian_posterior,
            builders.full_covariance_gaussian_prior,
            "N(0, I)",
            prior_needs_moment=2,
            extra_outputs=lambda j: j * (j + 3) // 2,
        ),
        Family(
            "laplace",
            "location-scale",
            "real",
            ("loc", "log-scale²"),
            builders.laplace_posterior,
            builders.laplace_prior,
            "Laplace(0, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "student-t",
            "location-scale",
            "real",
            ("loc", "log-scale²", "df (> 2)"),
            builders.student_t_posterior,
            builders.student_t_prior,
            f"Student-t(ν = {builders.STUDENT_T_PRIOR_DF:g}, 0, 1)",
            finite_moments=2,
        ),
        Family(
            "multivariate-student-t",
            "location-scale",
            "real",
            ("loc", "log-scale²", "cholesky-off-diagonal", "df"),
            builders.multivariate_student_t_posterior,
            builders.multivariate_student_t_prior,
            f"elliptical t(ν = {builders.STUDENT_T_PRIOR_DF:g}, 0, I)",
            finite_moments=2,
            extra_outputs=lambda j: j * (j + 3) // 2 + 1,
        ),
        Family(
            "uniform",
            "location-scale",
            "real",
            ("centre", "log-half-width²"),
            builders.uniform_posterior,
            builders.uniform_prior,
            "U(0, 1)",
            prior_support="unit-interval",
        ),
        Family(
            "triangular",
            "location-scale",
            "real",
            ("loc", "log-half-width²"),
            builders.triangular_posterior,
            None,
            "its support is a bounded interval, outside which every real posterior has mass",
        ),
        # §2.4 tractable inverse CDF
        Family(
            "logistic",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            builders.logistic_posterior,
            builders.logistic_prior,
            "Logistic(0, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "cauchy",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            builders.cauchy_posterior,
            builders.cauchy_prior,
            "Cauchy(0, 1)",
            finite_moments=0.5,
        ),
        Family(
            "gumbel",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            builders.gumbel_posterior,
            None,
            "its log-density falls like e^(−z): KL is infinite for posteriors with polynomial tails",
        ),
        Family(
            "exponential",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            builders.exponential_posterior,
            builders.exponential_prior,
            "Exponential(1)",
            prior_needs_moment=1,
        ),
        Family(
            "rayleigh",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            builders.rayleigh_posterior,
            builders.rayleigh_prior,
            "Rayleigh(1)",
            prior_needs_moment=2,
        ),
        Family(
            "pareto",
            "inverse-cdf",
            "positive",
            ("log-scale²", "alpha (> 2)"),
            builders.pareto_posterior,
            None,
            "its support [1, ∞) excludes the rest of the positive half-line",
            finite_moments=2,
        ),
        Family(
            "weibull",
            "inverse-cdf",
            "positive",
            ("log-scale²", "shape"),
            builders.weibull_posterior,
            builders.weibull_prior,
            f"Weibull(1, shape {builders.WEIBULL_PRIOR_SHAPE:g})",
            prior_needs_moment=builders.WEIBULL_PRIOR_SHAPE,
        ),
        Family(
            "reciprocal",
            "inverse-cdf",
            "positive",
            ("log-low²", "log-ratio"),
            builders.reciprocal_posterior,
            None,
            "its support is a bounded interval",
        ),
        Family(
            "gompertz",
            "inverse-cdf",
            "positive",
            ("log-scale²", "shape"),
            builders.gompertz_posterior,
            None,
            "its log-density falls like e^z: KL is infinite for posteriors with heavier tails (log-normal, Pareto, F)",
        ),
        Family(
            "erlang",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            builders.erlang_posterior,
            builders.erlang_prior,
            f"Erlang(k = {builders.ERLANG_SHAPE}, 1)",
            prior_needs_moment=1,
        ),
        # §2.4 composition
        Family(
            "log-normal",
            "composition",
            "positive",
            ("loc", "log-scale²"),
            builders.log_normal_posterior,
            builders.log_normal_prior,
            "LogNormal(0, 1)",
        ),
        Family(
            "gamma",
            "composition",
            "positive",
            ("log-scale²", "shape"),
            builders.gamma_posterior,
            builders.gamma_prior,
            "Gamma(1, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "chi-squared",
            "composition",
            "positive",
            ("df",),
            builders.chi_squared_posterior,
            builders.chi_squared_prior,
            f"χ²({builders.CHI2_PRIOR_DF:g})",
            prior_needs_moment=1,
        ),
        Family(
            "f",
            "composition",
            "positive",
            ("df1", "df2 (> 4)"),
            builders.fisher_posterior,
            None,
            "no standard member; pair it with a positive prior such as exponential",
            finite_moments=2,
        ),
        Family(
            "beta",
            "composition",
            "unit-interval",
            ("alpha", "beta"),
            builders.beta_posterior,
            builders.beta_prior,
            "Beta(1, 1)",
        ),
        Family(
            "dirichlet",
            "composition",
            "simplex",
            ("concentration",),
            builders.dirichlet_posterior,
            builders.dirichlet_prior,
            "Dirichlet(1, ..., 1)",
        ),
    ]
}


def get_family(name: str) -> Family:
    """The family called ``name`` (lower case, hyphens), or a one-line AevbError."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise AevbError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def prior_names() -> list[str]:
    """Families that have a standard prior."""
    return [name for name, family in FAMILIES.items() if family.prior_builder is not None]


def check_pair(posterior: str, prior: str) -> None:
    """A one-line AevbError unless KL(q ‖ p) is finite for this posterior and prior family."""
    q, p = get_family(posterior), get_family(prior)
    if p.prior_builder is None:
        raise AevbError(f"`prior` {prior} is not available: {p.prior_description}")
    if q.support != p.support_as_prior:
        raise AevbError(
            f"a {posterior} posterior lives on the {q.support} support but the {prior} prior on the "
            f"{p.support_as_prior} one: KL(q || p) is infinite; choose a prior on the {q.support} support "
            f"({', '.join(n for n in prior_names() if FAMILIES[n].support_as_prior == q.support)})"
        )
    if p.prior_needs_moment > q.finite_moments:
        raise AevbError(
            f"a {posterior} posterior has too heavy tails for the {prior} prior (KL(q || p) is infinite); "
            f"choose a prior with logarithmic tails ({', '.join(n for n in prior_names() if FAMILIES[n].prior_needs_moment == 0 and FAMILIES[n].support_as_prior == 'real')})"
        )


def has_closed_form_kl(posterior: str, prior: str) -> bool:
    """Whether the KL registry knows KL(q ‖ p) for these families (estimator B can train them)."""
    q = get_family(posterior).posterior(torch.zeros(1, get_family(posterior).num_outputs(2)))
    try:
        kl_divergence(q, get_family(prior).prior(2))
    except NotImplementedError:
        return False
    return True


#: q(z|x) and p(z) of the paper's model (§3): N(μ, diag σ²) and N(0, I).
PAPER_POSTERIOR, PAPER_PRIOR = "gaussian", "gaussian"


def families_of(config) -> tuple[str, str]:
    """(posterior, prior) family names of a model configuration (None, or a module of the user's
    own without them: the paper's pair)."""
    return getattr(config, "posterior", PAPER_POSTERIOR), getattr(config, "prior", PAPER_PRIOR)


def check_estimator(model: ModelConfig, estimator: str) -> None:
    """A one-line AevbError when ``estimator`` cannot train or evaluate this posterior/prior pair:
    estimator B needs KL(q ‖ p) in closed form."""
    posterior, prior = families_of(model)
    if (posterior, prior) == (PAPER_POSTERIOR, PAPER_PRIOR):
        return
    if estimator.upper() == "B" and not has_closed_form_kl(posterior, prior):
        raise AevbError(
            f"estimator B needs KL({posterior} || {prior}) in closed form and there is none; use `estimator` A"
        )


def check_hmc_prior(model: ModelConfig) -> None:
    """HMC moves z freely in R^J: a one-line AevbError for a prior on a restricted support."""
    prior = families_of(model)[1]
    if get_family(prior).support_as_prior != "real":
        raise AevbError(
            f"HMC needs a prior on the whole real line; the {prior} prior lives on the "
            f"{get_family(prior).support_as_prior} support"
        )


def default_estimator(posterior: str, prior: str) -> str:
    """The paper's estimator B where KL(q ‖ p) has a closed form, else the generic estimator A."""
    return "B" if has_closed_form_kl(posterior, prior) else "A"
