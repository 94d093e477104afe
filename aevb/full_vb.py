"""Full variational Bayes over the decoder's parameters (paper Appendix F, Example F.1).

The generative parameters θ (every weight and bias of the decoder, and its per-dimension
log-variance where it has one) get a hyperprior p_α(θ) = N(0, I/λ) (λ = ``--prior-precision``,
1 in the paper) and a factorised Gaussian approximate posterior q_φ(θ) = N(μ_θ, diag σ_θ²). The
bound on the marginal likelihood of the whole training set X of N points is

    𝓛(φ; X) = E_q(θ)[Σ_i 𝓛_θ(x⁽ⁱ⁾)] − KL(q_φ(θ) ‖ p_α(θ)),

𝓛_θ(x) being the VAE's per-datapoint bound. Its SGVB estimate on a minibatch of M points
reparameterises θ̃ = μ_θ + σ_θ ⊙ ζ, ζ ~ N(0, I), and z̃ = μ_z + σ_z ⊙ ε, and takes both KL terms in
closed form (Example F.1; App. B per coordinate):

    (N/M) Σ_i [log p_θ̃(x⁽ⁱ⁾|z̃⁽ⁱ⁾) − KL(q(z|x⁽ⁱ⁾) ‖ p(z))] − KL(q(θ) ‖ p(θ)),

i.e. estimator B (eq. 7) inside, run with the drawn θ̃. Everything here is per datapoint: the
estimate above divided by N.

Only θ is under q, as in the paper: the encoder's parameters are variational parameters (part of
φ) and stay point estimates. For a like-for-like comparison with MAP training they keep MAP's
weight decay λ/N; μ_θ and σ_θ get none, since the KL term already is the prior on θ.

θ̃ is drawn once per minibatch and shared by its M points: the decoder then runs as one matrix
product per layer, as in MAP training (a draw per datapoint would need M copies of the weights and
batched products, M times the memory), and the estimate stays unbiased — only its variance is
larger (the points' terms are correlated through θ̃).

A :class:`FullVBVAE` keeps μ_θ as the decoder's own parameters — initialised like the MAP model's
from N(0, 0.01²) (§5), so a run starts where the MAP run with the same seed starts — and log σ_θ in
``decoder_log_scale``. Its ``decode`` runs the decoder with a parameter draw
(``torch.func.functional_call``; no module is copied): the one fixed by
:meth:`FullVBVAE.decoder_parameters`, else a fresh draw per call, so every code path that decodes
(bounds, importance sampling) evaluates the model averaged over q(θ). ``decoder.mean`` — samples,
reconstructions and manifolds (``aevb sample``) — uses θ = μ_θ, the posterior mean.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence
from torch.func import functional_call

from .distributed import SINGLE_PROCESS, ProcessGroup
from .errors import AevbError
from .estimators import estimator_b
from .evaluation import BoundEstimate, per_datapoint_bound
from .evaluation.importance_sampling import LogLikelihoodEstimate, estimate_log_likelihood, log_mean_exp_with_stderr
from .model import VAE, ModelConfig
from .training import AEVB

DecoderParameters = dict[str, torch.Tensor]   # decoder parameter name (as in named_parameters) → tensor


def _key(name: str) -> str:
    """A decoder parameter's name as a ParameterDict key (which cannot hold dots)."""
    return name.replace(".", "__")


class FullVBVAE(VAE):
    """The VAE of §3 with a factorised Gaussian posterior q(θ) = N(μ_θ, diag σ_θ²) over the decoder's
    parameters (App. F, Example F.1); the encoder's parameters are point estimates.

    μ_θ are ``self.decoder``'s parameters; ``decoder_log_scale[key]`` holds log σ_θ for the decoder
    parameter of the same name (dots as ``__``), of the same shape, initialised to
    log ``config.decoder_posterior_init_std``.
    """

    def __init__(self, config: ModelConfig):
        if config.decoder_posterior != "gaussian":
            raise AevbError("a FullVBVAE needs decoder_posterior='gaussian'")
        super().__init__(config)
        self.decoder_log_scale = nn.ParameterDict(
            {_key(name): nn.Parameter(torch.empty_like(value)) for name, value in self.decoder.named_parameters()})
        self._fixed: DecoderParameters | None = None
        self._reset_log_scale()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Encoder and μ_θ from N(0, init_std²), drawn exactly as :meth:`VAE.reset_parameters` draws
        the MAP model's (same order, same generator use); σ_θ = ``decoder_posterior_init_std``."""
        with torch.no_grad():
            for parameter in chain(self.encoder.parameters(), self.decoder.parameters()):
                parameter.normal_(0.0, self.config.init_std, generator=generator)
        if "decoder_log_scale" in self._modules:   # (VAE.__init__ calls this before it exists)
            self._reset_log_scale()

    def _reset_log_scale(self) -> None:
        with torch.no_grad():
            for log_scale in self.decoder_log_scale.values():
                log_scale.fill_(math.log(self.config.decoder_posterior_init_std))

    def decoder_posterior(self) -> dict[str, Normal]:
        """q(θ), one ``Normal(μ, σ)`` per decoder parameter tensor (batch shape = its shape), by name."""
        return {name: Normal(mean, self.decoder_log_scale[_key(name)].exp(), validate_args=False)
                for name, mean in self.decoder.named_parameters()}

    def decoder_parameter_kl(self, prior_precision: float = 1.0) -> torch.Tensor:
        """KL(q(θ) ‖ p_α(θ)), p_α(θ) = N(0, I/λ), in closed form (the KL registry; App. B per
        coordinate), summed over every decoder parameter: a 0-dim tensor, nats (whole data set)."""
        if not prior_precision > 0:
            raise AevbError(f"full VB needs a proper prior on θ: prior precision must be > 0, got {prior_precision}")
        prior_std = prior_precision ** -0.5
        total = torch.zeros((), dtype=self._prior_loc.dtype, device=self._prior_loc.device)
        for q in self.decoder_posterior().values():
            prior = Normal(torch.zeros_like(q.loc), torch.full_like(q.loc, prior_std), validate_args=False)
            total = total + kl_divergence(q, prior).sum()
        return total

    def draw_decoder_parameters(self, noise: DecoderParameters | None = None) -> DecoderParameters:
        """θ̃ = μ_θ + σ_θ ⊙ ζ, ζ ~ N(0, I): reparameterised (differentiable in μ_θ and σ_θ), by name.
        ``noise``: ζ by name, instead of fresh draws (tests, e.g. finite differences)."""
        posterior = self.decoder_posterior()
        if noise is None:
            return {name: q.rsample() for name, q in posterior.items()}
        return {name: q.loc + q.scale * noise[name] for name, q in posterior.items()}

    def mean_decoder_parameters(self) -> DecoderParameters:
        """θ = μ_θ, the posterior mean (the decoder's own parameters)."""
        return dict(self.decoder.named_parameters())

    @contextmanager
    def decoder_parameters(self, parameters: DecoderParameters):
        """Within the block every ``decode`` uses ``parameters`` (e.g. one draw θ̃ for a minibatch,
        or :meth:`mean_decoder_parameters`) instead of a fresh draw per call."""
        previous, self._fixed = self._fixed, parameters
        try:
            yield self
        finally:
            self._fixed = previous

    def decode(self, z: torch.Tensor) -> Distribution:
        """p_θ(x|z) for z (..., J), θ the fixed parameters (see :meth:`decoder_parameters`), else a
        fresh draw θ̃ ~ q(θ) for this call."""
        parameters = self._fixed if self._fixed is not None else self.draw_decoder_parameters()
        return functional_call(self.decoder, parameters, (z,))


@dataclass(frozen=True)
class FullBoundEstimate:
    """One SGVB estimate of the full bound 𝓛(φ; X) from a minibatch (App. F).

    ``datapoint_bounds`` (M,): estimator B of 𝓛_θ̃(x⁽ⁱ⁾) at the drawn θ̃, nats; ``parameter_kl``:
    KL(q(θ) ‖ p(θ)), nats for the whole data set of ``dataset_size`` points.
    """

    datapoint_bounds: torch.Tensor
    parameter_kl: torch.Tensor
    dataset_size: int

    @property
    def per_datapoint(self) -> torch.Tensor:
        """𝓛(φ; X)/N ≈ (1/M) Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − KL/N: 0-dim, nats per datapoint."""
        return self.datapoint_bounds.mean() - self.parameter_kl / self.dataset_size

    @property
    def total(self) -> torch.Tensor:
        """𝓛(φ; X) ≈ (N/M) Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − KL: 0-dim, nats (the paper's form)."""
        return self.per_datapoint * self.dataset_size


def full_bound_estimate(model: FullVBVAE, x: torch.Tensor, dataset_size: int, prior_precision: float = 1.0,
                        num_samples: int = 1, noise: torch.Tensor | None = None,
                        parameter_noise: DecoderParameters | None = None) -> FullBoundEstimate:
    """The SGVB estimator of the full bound (App. F, Example F.1) on minibatch x (M, D) of a data
    set of N = ``dataset_size`` points: one draw θ̃ ~ q(θ) for the minibatch, estimator B with L =
    ``num_samples`` draws of z per point under it, and the closed-form KL of q(θ) from N(0, I/λ).
    Unbiased for 𝓛(φ; X) when x is a uniformly random minibatch; differentiable in every
    parameter. ``noise`` ε (L, M, J) and ``parameter_noise`` ζ (by name) replace fresh draws."""
    theta = model.draw_decoder_parameters(parameter_noise)
    with model.decoder_parameters(theta):
        bounds = estimator_b(model, x, num_samples, noise=noise)
    return FullBoundEstimate(bounds, model.decoder_parameter_kl(prior_precision), dataset_size)


@torch.no_grad()
def expected_bound(model: FullVBVAE, data: torch.Tensor, num_samples: int = 1, parameter_draws: int = 10,
                   batch_size: int | None = None) -> BoundEstimate:
    """E_q(θ)[𝓛_θ(x)] averaged over the rows of ``data`` (N, D): nats per datapoint, estimated with
    ``parameter_draws`` draws of θ, each scoring every row with L = ``num_samples`` draws of z
    (estimator B). On test data it is a lower bound on the predictive log p(x) (Jensen, twice);
    the standard error is over datapoints of the per-row averages."""
    total = torch.zeros(data.shape[0], dtype=torch.float64, device=data.device)
    for _ in range(parameter_draws):
        with model.decoder_parameters(model.draw_decoder_parameters()):
            total += per_datapoint_bound(model, data, estimator="B", num_samples=num_samples,
                                         batch_size=batch_size).double()
    values = total / parameter_draws
    count = values.numel()
    stderr = values.std().item() / math.sqrt(count) if count > 1 else math.nan
    return BoundEstimate(mean=values.mean().item(), stderr=stderr, num_datapoints=count, num_samples=num_samples)


def full_bound(model: FullVBVAE, train: torch.Tensor, prior_precision: float = 1.0, num_samples: int = 1,
               parameter_draws: int = 10) -> float:
    """𝓛(φ; X)/N = mean over the N training rows of E_q(θ)[𝓛_θ(x)] − KL(q(θ) ‖ p(θ))/N, nats per
    datapoint: the bound on (1/N) log p(X) that full VB maximises."""
    with torch.no_grad():
        kl = model.decoder_parameter_kl(prior_precision).item()
    return expected_bound(model, train, num_samples, parameter_draws).mean - kl / train.shape[0]


@torch.no_grad()
def predictive_log_likelihood(model: FullVBVAE, data: torch.Tensor, num_samples: int = 1000,
                              parameter_draws: int = 10, prior_mixture: float = 0.0) -> LogLikelihoodEstimate:
    """The predictive log-likelihood log p(x) = log E_q(θ)[p_θ(x)] of every row of ``data`` (N, D).

    For each of S = ``parameter_draws`` draws θ_s ~ q(θ), k = ``num_samples`` importance samples
    of z (encoder proposal, :func:`aevb.evaluation.importance_sampling.estimate_log_likelihood`) give
    û_s = (1/k) Σ_k p_θs(x, z_k)/q(z_k|x); the estimate is log (1/S) Σ_s û_s, the log-mean-exp of all
    S·k weights. The û_s are independent and identically distributed, so the standard error
    (delta method) comes from their spread: it includes the variation over θ, which the k weights
    of one draw cannot show. Needs S ≥ 2 for a standard error (NaN otherwise). Nats per datapoint.
    """
    if parameter_draws < 1 or num_samples < 1:
        raise AevbError(f"parameter draws and importance samples must be positive, got {parameter_draws}, "
                        f"{num_samples}")
    started = time.perf_counter()
    log_sum = torch.full((data.shape[0],), -math.inf, dtype=torch.float64)
    log_sum_squares = log_sum.clone()
    for _ in range(parameter_draws):
        with model.decoder_parameters(model.draw_decoder_parameters()):
            log_u = estimate_log_likelihood(model, data, num_samples=num_samples,
                                            prior_mixture=prior_mixture).per_datapoint
        log_sum = torch.logaddexp(log_sum, log_u)
        log_sum_squares = torch.logaddexp(log_sum_squares, 2 * log_u)
    estimate, stderr = log_mean_exp_with_stderr(log_sum, log_sum_squares, parameter_draws)
    return LogLikelihoodEstimate.from_per_datapoint(estimate, stderr, parameter_draws * num_samples,
                                                    time.perf_counter() - started)


class FullVariationalBayes(AEVB):
    """Algorithm 2 (App. F) as an :class:`aevb.training.Algorithm`: AEVB's step on the full-bound
    estimate of :func:`full_bound_estimate` per minibatch (its :meth:`objective`), with the
    optimiser, step-size selection, data order, evaluation and checkpoints of AEVB (§5). All its
    state is the model's parameters (μ_θ, log σ_θ, encoder), so checkpoints and exact resume need
    nothing more. Only the autograd engine differentiates this objective.

    Each step returns its minibatch's share of the full-bound estimate, Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − (M/N) KL,
    so that the step-size selection of §5 ranks the candidates by the bound this algorithm
    maximises (at small N the KL term dominates it, and with the data term alone the selection
    picks a step size at which σ_θ takes far longer to leave its small initial value), and the
    ``minibatch_bound`` of metrics.jsonl is 𝓛(φ; X)/N. The evaluated ``train_bound`` and
    ``valid_bound`` are E_q(θ)[𝓛_θ(x)], without the KL term; :meth:`run_summary` adds it.
    """

    name = "full-vb"
    distributable = False

    def __init__(self, prior_precision: float = 1.0, num_samples: int = 1, engine: str = "auto",
                 estimator: str = "B"):
        if not prior_precision > 0:
            raise AevbError("full-vb needs a proper prior N(0, I/λ) on θ: `prior_precision` must be > 0")
        if estimator.upper() != "B":
            raise AevbError(f"full-vb uses estimator B inside its bound (App. F, Example F.1), not {estimator}")
        super().__init__("B", num_samples, engine)
        self.estimator_name = None          # not an SGVB estimator of §2.3: autograd differentiates it
        self.prior_precision = prior_precision
        self.dataset_size: int | None = None

    def objective(self, model: FullVBVAE, x: torch.Tensor, num_samples: int,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """(M,) per-point shares of the full-bound estimate, 𝓛̃_θ̃(x⁽ⁱ⁾) − KL/N, nats: their mean is
        :attr:`FullBoundEstimate.per_datapoint`, the objective of Algorithm 2 per datapoint."""
        estimate = full_bound_estimate(model, x, self.dataset_size, self.prior_precision, num_samples, noise=noise)
        return estimate.datapoint_bounds - estimate.parameter_kl / self.dataset_size

    def setup(self, model: VAE, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        if not isinstance(model, FullVBVAE):
            raise AevbError("full-vb trains a model with a posterior over the decoder's parameters "
                            "(ModelConfig decoder_posterior='gaussian')")
        if group.distributed:
            raise AevbError("multi-process training runs AEVB only, not full-vb")
        self.dataset_size = train.shape[0]
        super().setup(model, train, group)

    def parameter_groups(self, model: FullVBVAE, weight_decay: float) -> list[dict]:
        """Optimiser groups: the encoder with MAP's weight decay, μ_θ and log σ_θ with none (their
        prior is the KL term). In ``model.parameters()`` order, which checkpoints rely on."""
        theta = {id(p) for p in chain(model.decoder.parameters(), model.decoder_log_scale.parameters())}
        return [{"params": [p for p in model.parameters() if id(p) not in theta], "weight_decay": weight_decay},
                {"params": [p for p in model.parameters() if id(p) in theta], "weight_decay": 0.0}]

    def run_summary(self, model: FullVBVAE, train_bound: float | None) -> dict:
        """For summary.json: KL(q(θ) ‖ p(θ)) (nats, and per training point) and the full bound per
        datapoint, ``train_bound`` (the mean of E_q(θ)[𝓛_θ(x)] on the training set) − KL/N."""
        with torch.no_grad():
            kl = model.decoder_parameter_kl(self.prior_precision).item()
        per_point = kl / self.dataset_size
        return {"decoder_parameter_kl": kl, "decoder_parameter_kl_per_datapoint": per_point,
                "full_train_bound": None if train_bound is None else train_bound - per_point}
