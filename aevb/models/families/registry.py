"""The reparameterisable families of §2.4 by their command-line names: how an encoder's
unconstrained outputs become an approximate posterior q(z|x), the standard prior p(z) of each
family, and which posterior/prior pairs have a finite KL.

An encoder for family F has one linear head of ``F.num_outputs(J)`` values per datapoint; for a
factorised family these are ``F.parameters`` blocks of J values each (one per latent dimension,
in that order), and the posterior is an ``Independent`` with batch shape (M,) and event shape
(J,). Constraints keep every parameter numerically safe:

* scales are exp(½ log σ²) with log σ² bounded exactly like the Gaussian encoder's
  (:func:`aevb.models.networks.bounded_log_variance`, ``--log-variance-bound``), so a zero output is scale 1;
* shapes are softplus(raw) + a floor, and where a moment must exist for the KL to any prior to be
  finite, the floor says so (Student-t ν > 2, Pareto α > 2, F's d₂ > 4: finite variance, which
  a Gaussian, Rayleigh or Weibull prior's log-density needs).

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
import torch.nn.functional as F
from torch.distributions import (
    Beta,
    Cauchy,
    Chi2,
    Dirichlet,
    Distribution,
    Exponential,
    FisherSnedecor,
    Gamma,
    Gumbel,
    Independent,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    Pareto,
    StudentT,
    Uniform,
    Weibull,
    kl_divergence,
)

from ...errors import AevbError
from ..config import ModelConfig
from ..networks import bounded_log_variance
from . import kl as _registered_kls  # noqa: F401  (registers the closed-form KLs)
from .composition import Erlang
from .inverse_cdf import Gompertz, Logistic, Rayleigh, Reciprocal
from .location_scale import MultivariateStudentT, Triangular

ROUTES = ("inverse-cdf", "location-scale", "composition")  # §2.4's three routes
SUPPORTS = ("real", "positive", "unit-interval", "simplex")

SHAPE_FLOOR = 0.1  # smallest shape parameter: keeps Gamma-type draws away from underflow
STUDENT_T_PRIOR_DF = 3.0  # the Student-t priors' ν: the smallest integer with a finite variance
ERLANG_SHAPE = 2  # the Erlang family's fixed integer shape k (k = 1 is the exponential)
WEIBULL_PRIOR_SHAPE = 2.0  # the Weibull prior's shape (shape 1 would repeat the exponential prior)
CHI2_PRIOR_DF = 2.0  # the χ² prior's degrees of freedom


def scale_from(raw: torch.Tensor, bound: float | None) -> torch.Tensor:
    """A positive scale from an unconstrained output, as the Gaussian encoder makes σ:
    exp(½ log σ²) with log σ² = B·tanh(raw/B) (raw itself when ``bound`` is None)."""
    return torch.exp(0.5 * bounded_log_variance(raw, bound))


def shape_from(raw: torch.Tensor, floor: float = SHAPE_FLOOR) -> torch.Tensor:
    """A shape parameter > ``floor`` from an unconstrained output: softplus(raw) + floor."""
    return F.softplus(raw) + floor


def _factorised(base: Distribution) -> Independent:
    return Independent(base, 1, validate_args=False)


def _lower_triangular(diagonal: torch.Tensor, off_diagonal: torch.Tensor) -> torch.Tensor:
    """(..., J) positive diagonal and (..., J(J−1)/2) strictly-lower entries → (..., J, J) L."""
    dim = diagonal.shape[-1]
    rows, columns = torch.tril_indices(dim, dim, offset=-1, device=diagonal.device)
    strictly_lower = diagonal.new_zeros(diagonal.shape + (dim,))
    strictly_lower[..., rows, columns] = off_diagonal  # differentiable in off_diagonal
    return strictly_lower + torch.diag_embed(diagonal)


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


def _blocks(raw: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    return raw.chunk(count, dim=-1)


# --- posteriors from unconstrained outputs ---------------------------------------------------


def _gaussian(raw, bound):
    mean, log_var = _blocks(raw, 2)
    return _factorised(Normal(mean, scale_from(log_var, bound), validate_args=False))


def _loc_scale(distribution):
    def build(raw, bound):
        loc, raw_scale = _blocks(raw, 2)
        return _factorised(distribution(loc, scale_from(raw_scale, bound), validate_args=False))

    return build


def _student_t(raw, bound):
    loc, raw_scale, raw_df = _blocks(raw, 3)
    return _factorised(StudentT(shape_from(raw_df, 2.0), loc, scale_from(raw_scale, bound), validate_args=False))


def _uniform(raw, bound):
    centre, raw_half_width = _blocks(raw, 2)
    half_width = scale_from(raw_half_width, bound)
    return _factorised(Uniform(centre - half_width, centre + half_width, validate_args=False))


def _full_covariance_parts(raw, latent_dim, bound):
    mean, log_var = raw[..., :latent_dim], raw[..., latent_dim : 2 * latent_dim]
    off_diagonal = raw[..., 2 * latent_dim : 2 * latent_dim + latent_dim * (latent_dim - 1) // 2]
    return mean, _lower_triangular(scale_from(log_var, bound), off_diagonal)


def _latent_dim_of_full(outputs: int, extra: int) -> int:
    """J from the head width of a full-covariance family: outputs = 2J + J(J−1)/2 + extra."""
    return int(round((-3 + math.sqrt(9 + 8 * (outputs - extra))) / 2))


def _full_covariance_gaussian(raw, bound):
    dim = _latent_dim_of_full(raw.shape[-1], 0)
    mean, tril = _full_covariance_parts(raw, dim, bound)
    return MultivariateNormal(mean, scale_tril=tril, validate_args=False)


def _multivariate_student_t(raw, bound):
    dim = _latent_dim_of_full(raw.shape[-1], 1)
    mean, tril = _full_covariance_parts(raw, dim, bound)
    return MultivariateStudentT(shape_from(raw[..., -1], 2.0), mean, tril, validate_args=False)


def _exponential(raw, bound):
    return _factorised(Exponential(1 / scale_from(raw, bound), validate_args=False))


def _rayleigh(raw, bound):
    return _factorised(Rayleigh(scale_from(raw, bound), validate_args=False))


def _pareto(raw, bound):
    raw_scale, raw_alpha = _blocks(raw, 2)
    return _factorised(Pareto(scale_from(raw_scale, bound), shape_from(raw_alpha, 2.0), validate_args=False))


def _weibull(raw, bound):
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Weibull(scale_from(raw_scale, bound), shape_from(raw_shape), validate_args=False))


def _reciprocal(raw, bound):
    raw_low, raw_log_ratio = _blocks(raw, 2)
    low = scale_from(raw_low, bound)
    return _factorised(Reciprocal(low, low * torch.exp(shape_from(raw_log_ratio, 1e-3)), validate_args=False))


def _gompertz(raw, bound):
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Gompertz(shape_from(raw_shape), scale_from(raw_scale, bound), validate_args=False))


def _erlang(raw, bound):
    return _factorised(Erlang(ERLANG_SHAPE, 1 / scale_from(raw, bound), validate_args=False))


def _log_normal(raw, bound):
    loc, raw_scale = _blocks(raw, 2)
    return _factorised(LogNormal(loc, scale_from(raw_scale, bound), validate_args=False))


def _gamma(raw, bound):
    raw_scale, raw_shape = _blocks(raw, 2)
    return _factorised(Gamma(shape_from(raw_shape), 1 / scale_from(raw_scale, bound), validate_args=False))


def _chi_squared(raw, bound):
    return _factorised(Chi2(shape_from(raw), validate_args=False))


def _fisher(raw, bound):
    raw_df1, raw_df2 = _blocks(raw, 2)
    return _factorised(FisherSnedecor(shape_from(raw_df1), shape_from(raw_df2, 4.0), validate_args=False))


def _beta(raw, bound):
    raw_a, raw_b = _blocks(raw, 2)
    return _factorised(Beta(shape_from(raw_a), shape_from(raw_b), validate_args=False))


def _dirichlet(raw, bound):
    return Dirichlet(shape_from(raw), validate_args=False)


# --- standard priors (zeros: a (J,) zero tensor of the right dtype and device) -----------------


def _ones(zeros):
    return torch.ones_like(zeros)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        # §2.4 location-scale (with the paper's own Gaussian first)
        Family(
            "gaussian",
            "location-scale",
            "real",
            ("mean", "log-variance"),
            _gaussian,
            lambda z: _factorised(Normal(z, _ones(z), validate_args=False)),
            "N(0, I)",
            prior_needs_moment=2,
        ),
        Family(
            "full-covariance-gaussian",
            "location-scale",
            "real",
            ("mean", "log-variance", "cholesky-off-diagonal"),
            _full_covariance_gaussian,
            lambda z: MultivariateNormal(z, scale_tril=torch.diag(_ones(z)), validate_args=False),
            "N(0, I)",
            prior_needs_moment=2,
            extra_outputs=lambda j: j * (j + 3) // 2,
        ),
        Family(
            "laplace",
            "location-scale",
            "real",
            ("loc", "log-scale²"),
            _loc_scale(Laplace),
            lambda z: _factorised(Laplace(z, _ones(z), validate_args=False)),
            "Laplace(0, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "student-t",
            "location-scale",
            "real",
            ("loc", "log-scale²", "df (> 2)"),
            _student_t,
            lambda z: _factorised(StudentT(STUDENT_T_PRIOR_DF, z, _ones(z), validate_args=False)),
            f"Student-t(ν = {STUDENT_T_PRIOR_DF:g}, 0, 1)",
            finite_moments=2,
        ),
        Family(
            "multivariate-student-t",
            "location-scale",
            "real",
            ("loc", "log-scale²", "cholesky-off-diagonal", "df"),
            _multivariate_student_t,
            lambda z: MultivariateStudentT(
                torch.tensor(STUDENT_T_PRIOR_DF, dtype=z.dtype, device=z.device),
                z,
                torch.diag(_ones(z)),
                validate_args=False,
            ),
            f"elliptical t(ν = {STUDENT_T_PRIOR_DF:g}, 0, I)",
            finite_moments=2,
            extra_outputs=lambda j: j * (j + 3) // 2 + 1,
        ),
        Family(
            "uniform",
            "location-scale",
            "real",
            ("centre", "log-half-width²"),
            _uniform,
            lambda z: _factorised(Uniform(z, _ones(z), validate_args=False)),
            "U(0, 1)",
            prior_support="unit-interval",
        ),
        Family(
            "triangular",
            "location-scale",
            "real",
            ("loc", "log-half-width²"),
            _loc_scale(Triangular),
            None,
            "its support is a bounded interval, outside which every real posterior has mass",
        ),
        # §2.4 tractable inverse CDF
        Family(
            "logistic",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            _loc_scale(Logistic),
            lambda z: _factorised(Logistic(z, _ones(z), validate_args=False)),
            "Logistic(0, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "cauchy",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            _loc_scale(Cauchy),
            lambda z: _factorised(Cauchy(z, _ones(z), validate_args=False)),
            "Cauchy(0, 1)",
            finite_moments=0.5,
        ),
        Family(
            "gumbel",
            "inverse-cdf",
            "real",
            ("loc", "log-scale²"),
            _loc_scale(Gumbel),
            None,
            "its log-density falls like e^(−z): KL is infinite for posteriors with polynomial tails",
        ),
        Family(
            "exponential",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            _exponential,
            lambda z: _factorised(Exponential(_ones(z), validate_args=False)),
            "Exponential(1)",
            prior_needs_moment=1,
        ),
        Family(
            "rayleigh",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            _rayleigh,
            lambda z: _factorised(Rayleigh(_ones(z), validate_args=False)),
            "Rayleigh(1)",
            prior_needs_moment=2,
        ),
        Family(
            "pareto",
            "inverse-cdf",
            "positive",
            ("log-scale²", "alpha (> 2)"),
            _pareto,
            None,
            "its support [1, ∞) excludes the rest of the positive half-line",
            finite_moments=2,
        ),
        Family(
            "weibull",
            "inverse-cdf",
            "positive",
            ("log-scale²", "shape"),
            _weibull,
            lambda z: _factorised(Weibull(_ones(z), WEIBULL_PRIOR_SHAPE * _ones(z), validate_args=False)),
            f"Weibull(1, shape {WEIBULL_PRIOR_SHAPE:g})",
            prior_needs_moment=WEIBULL_PRIOR_SHAPE,
        ),
        Family(
            "reciprocal",
            "inverse-cdf",
            "positive",
            ("log-low²", "log-ratio"),
            _reciprocal,
            None,
            "its support is a bounded interval",
        ),
        Family(
            "gompertz",
            "inverse-cdf",
            "positive",
            ("log-scale²", "shape"),
            _gompertz,
            None,
            "its log-density falls like e^z: KL is infinite for posteriors with heavier tails (log-normal, Pareto, F)",
        ),
        Family(
            "erlang",
            "inverse-cdf",
            "positive",
            ("log-scale²",),
            _erlang,
            lambda z: _factorised(Erlang(ERLANG_SHAPE, _ones(z), validate_args=False)),
            f"Erlang(k = {ERLANG_SHAPE}, 1)",
            prior_needs_moment=1,
        ),
        # §2.4 composition
        Family(
            "log-normal",
            "composition",
            "positive",
            ("loc", "log-scale²"),
            _loc_scale(LogNormal),
            lambda z: _factorised(LogNormal(z, _ones(z), validate_args=False)),
            "LogNormal(0, 1)",
        ),
        Family(
            "gamma",
            "composition",
            "positive",
            ("log-scale²", "shape"),
            _gamma,
            lambda z: _factorised(Gamma(_ones(z), _ones(z), validate_args=False)),
            "Gamma(1, 1)",
            prior_needs_moment=1,
        ),
        Family(
            "chi-squared",
            "composition",
            "positive",
            ("df",),
            _chi_squared,
            lambda z: _factorised(Chi2(CHI2_PRIOR_DF * _ones(z), validate_args=False)),
            f"χ²({CHI2_PRIOR_DF:g})",
            prior_needs_moment=1,
        ),
        Family(
            "f",
            "composition",
            "positive",
            ("df1", "df2 (> 4)"),
            _fisher,
            None,
            "no standard member; pair it with a positive prior such as exponential",
            finite_moments=2,
        ),
        Family(
            "beta",
            "composition",
            "unit-interval",
            ("alpha", "beta"),
            _beta,
            lambda z: _factorised(Beta(_ones(z), _ones(z), validate_args=False)),
            "Beta(1, 1)",
        ),
        Family(
            "dirichlet",
            "composition",
            "simplex",
            ("concentration",),
            _dirichlet,
            lambda z: Dirichlet(_ones(z), validate_args=False),
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
