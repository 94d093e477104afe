"""Monte Carlo EM with Hybrid Monte Carlo (paper Appendix E): the paper's non-on-line baseline (Fig. 3).

There is no recognition model. Every training datapoint x⁽ⁱ⁾ owns a persistent latent sample z⁽ⁱ⁾
(a Markov chain on its posterior p_θ(z|x⁽ⁱ⁾) ∝ p(z) p_θ(x⁽ⁱ⁾|z), started from the prior) and a
persistent HMC step size ε⁽ⁱ⁾. Each time a minibatch is drawn, for its rows:

1. E-step: one HMC transition of each row's chain on the posterior under the current θ, with
   ``leapfrog_steps`` = 10 leapfrog steps (App. E);
2. the step size is adapted towards the paper's 90% acceptance rate (below);
3. M-step: ``weight_updates`` = 5 gradient steps of the optimiser the trainer passes (so with the
   same Adagrad and weight decay as AEVB) on the loss −(1/M) Σ log p_θ(x⁽ⁱ⁾|z⁽ⁱ⁾) with the new
   samples, which reaches the decoder's parameters only (the encoder's stay untouched).

Step-size adaptation. HMC leaves p_θ(z|x) invariant for any fixed ε, and the paper tunes ε
"automatically to a 90% acceptance rate". Each chain gets one transition per visit, about once per
epoch, and its target moves as θ is learned, so there is no burn-in phase to run dual averaging in
(as :func:`aevb.evaluation.hmc.sample_hmc` does for the fixed targets of Appendix D). Instead each datapoint's
step size follows a constant-gain Robbins–Monro recursion on its log:

    log ε⁽ⁱ⁾ ← log ε⁽ⁱ⁾ + γ (a⁽ⁱ⁾ − 0.9),

where a⁽ⁱ⁾ is the Metropolis acceptance probability of the transition just made (the probability,
not the 0/1 outcome: same mean, less noise). Its fixed point is E[a] = 0.9; the gain γ
(``adaptation_rate``, default 0.5) is constant rather than decaying so that ε keeps tracking a
posterior that sharpens during training. The step size of a transition depends only on the chain's
past, so each transition is still a posterior-invariant Metropolis–Hastings kernel; the adaptation
does perturb the chain slightly (adaptive MCMC), which the E-step test bounds on factor analysis.
ε starts at ``initial_step_size`` = 0.5, a good value for the N(0, I) prior that the posterior
equals at initialisation; it shrinks quickly (a rejection costs up to γ·0.9 in log ε) and grows
slowly (an acceptance gains at most γ·0.1), and is kept within [``min_step_size``, ``max_step_size``].
Early in training the posteriors sharpen faster than one update per epoch follows, so the
acceptance rate sits below 0.9 for a while (≈ 0.65–0.8 over the first ten epochs of a small MNIST
model) and approaches it as θ settles.

Jitter. Each transition uses ε⁽ⁱ⁾ × U(1 − j, 1 + j), drawn afresh (``step_size_jitter`` j = 0.2;
the draw is independent of the state, so the kernel stays valid — Neal, 2011, "MCMC using
Hamiltonian dynamics", §5.4.2.2). With a fixed trajectory of 10 leapfrog steps and a nearly
Gaussian posterior the dynamics can be nearly periodic and the chain barely moves: on factor
analysis without jitter the sampled posterior variance came out 6–9% too large with adaptation,
and up to 6× too large with a fixed ε; with jitter it is within sampling error.

Cost. The per-datapoint state (N × (J + 2) numbers) and the one-transition-per-visit E-step are
why MCEM is not on-line (§5): a chain only moves when its datapoint is visited, so with a large
training set each chain lags far behind θ. Each visit costs ``leapfrog_steps`` + 1 decoder
forward/backward passes for the E-step and ``weight_updates`` for the M-step, against one for AEVB.
``samples`` in the trainer's metrics counts datapoint visits, like the paper's "training points
evaluated".

MCEM has no lower bound: :meth:`MonteCarloEM.step` returns NaN, ``has_bound = False`` tells the
trainer to report NaN bounds instead of the meaningless bound of the untrained encoder, and
:meth:`MonteCarloEM.log_likelihood` estimates log p(x) with the Appendix D estimator instead.
"""

from __future__ import annotations

import math

import torch

from ..errors import AevbError
from ..evaluation.hmc import HMCState, hmc_step, log_density_and_gradient
from ..evaluation.hmc_estimator import PAPER_LEAPFROG_STEPS, PAPER_POSTERIOR_SAMPLES, hmc_log_likelihood
from ..models.families import check_hmc_prior
from ..training.algorithm import Algorithm, refuse_conditional, refuse_decoder_posterior
from ..training.distributed import SINGLE_PROCESS, ProcessGroup

PAPER_MCEM_LEAPFROG_STEPS = 10  # App. E
PAPER_MCEM_WEIGHT_UPDATES = 5  # App. E
PAPER_MCEM_ACCEPTANCE = 0.9  # App. E


def _log_joint(model, x: torch.Tensor):
    prior = model.prior()

    def log_density(z: torch.Tensor) -> torch.Tensor:
        return prior.log_prob(z) + model.decode(z).log_prob(x)

    return log_density


class MonteCarloEM(Algorithm):
    """Monte Carlo EM (App. E) as an :class:`aevb.training.Algorithm`.

    Args:
        leapfrog_steps: leapfrog steps per HMC transition (App. E: 10).
        transitions: HMC transitions per visit of a datapoint (App. E: one, i.e. 10 leapfrog steps).
        weight_updates: optimiser steps on the decoder per minibatch (App. E: 5); 0 runs the
            E-step only.
        target_acceptance: acceptance probability the step sizes are adapted towards (App. E: 0.9).
        adaptation_rate: gain γ of the log-step-size recursion; 0 freezes the step sizes.
        initial_step_size: every chain's step size before adaptation.
        min_step_size: the smallest step size adaptation may reach.
        max_step_size: the largest step size adaptation may reach.
        step_size_jitter: each transition's ε is multiplied by U(1 − j, 1 + j); 0 for none.

    State after :meth:`setup` (on the training data's device, in its dtype): ``z`` (N, J) the
    chains' current samples, ``step_sizes`` (N,), ``acceptance`` (N,) the acceptance probability
    of each chain's latest transition (NaN before its first), and ``visits`` (N,).
    """

    name = "mcem"
    has_bound = False

    def __init__(
        self,
        leapfrog_steps: int = PAPER_MCEM_LEAPFROG_STEPS,
        weight_updates: int = PAPER_MCEM_WEIGHT_UPDATES,
        *,
        transitions: int = 1,
        target_acceptance: float = PAPER_MCEM_ACCEPTANCE,
        adaptation_rate: float = 0.5,
        initial_step_size: float = 0.5,
        min_step_size: float = 1e-4,
        max_step_size: float = 10.0,
        step_size_jitter: float = 0.2,
    ):
        if leapfrog_steps < 1 or transitions < 1:
            raise AevbError("MCEM needs at least one leapfrog step and one HMC transition per visit")
        if weight_updates < 0:
            raise AevbError(f"weight updates must be >= 0, got {weight_updates}")
        if not 0 < target_acceptance < 1:
            raise AevbError(f"target acceptance must lie in (0, 1), got {target_acceptance}")
        if not (adaptation_rate >= 0 and 0 < min_step_size <= initial_step_size <= max_step_size):
            raise AevbError("need adaptation_rate >= 0 and 0 < min_step_size <= initial_step_size <= max_step_size")
        if not 0 <= step_size_jitter < 1:
            raise AevbError(f"step-size jitter must lie in [0, 1), got {step_size_jitter}")
        self.leapfrog_steps = leapfrog_steps
        self.transitions = transitions
        self.weight_updates = weight_updates
        self.target_acceptance = target_acceptance
        self.adaptation_rate = adaptation_rate
        self.initial_step_size = initial_step_size
        self.min_step_size = min_step_size
        self.max_step_size = max_step_size
        self.step_size_jitter = step_size_jitter
        self.z: torch.Tensor | None = None
        self.step_sizes: torch.Tensor | None = None
        self.acceptance: torch.Tensor | None = None
        self.visits: torch.Tensor | None = None

    def check_model(self, config) -> None:
        refuse_conditional(self.name, config)
        refuse_decoder_posterior(config)
        check_hmc_prior(config)  # HMC moves z in all of R^J

    def setup(self, model, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        """Allocate the per-datapoint state: z⁽ⁱ⁾ ~ p(z) (global RNG), ε⁽ⁱ⁾ = ``initial_step_size``."""
        size, latent_dim = train.shape[0], model.prior().event_shape[0]
        self.z = torch.randn(size, latent_dim, dtype=train.dtype).to(train.device)
        self.step_sizes = torch.full((size,), self.initial_step_size, dtype=train.dtype, device=train.device)
        self.acceptance = torch.full((size,), math.nan, dtype=train.dtype, device=train.device)
        self.visits = torch.zeros(size, dtype=torch.long, device=train.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-datapoint chains and step sizes, for a checkpoint."""
        return {"z": self.z, "step_sizes": self.step_sizes, "acceptance": self.acceptance, "visits": self.visits}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("z", "step_sizes", "acceptance", "visits"):
            current = getattr(self, name)
            if state[name].shape != current.shape:
                raise ValueError(
                    f"MCEM state {name} has shape {tuple(state[name].shape)}, expected {tuple(current.shape)}"
                )
            current.copy_(state[name])

    def _check_setup(self) -> None:
        if self.z is None:
            raise AevbError("MonteCarloEM.setup(model, train) must be called before training")

    def e_step(self, model, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Advance the chains of training rows ``indices`` on p_θ(z|x) (θ held fixed), adapt their
        step sizes; return their new samples (M, J), detached."""
        self._check_setup()
        log_density = _log_joint(model, x)
        value, gradient = log_density_and_gradient(log_density, self.z[indices])
        state = HMCState(self.z[indices], value, gradient, self.step_sizes[indices])
        for _ in range(self.transitions):
            step_size = state.step_size
            if self.step_size_jitter:  # ε × U(1 − j, 1 + j), drawn afresh for every transition
                uniform = torch.rand(step_size.shape, dtype=step_size.dtype).to(step_size.device)
                state.step_size = step_size * (1 + self.step_size_jitter * (2 * uniform - 1))
            state, acceptance = hmc_step(log_density, state, self.leapfrog_steps)
            log_step = step_size.log() + self.adaptation_rate * (acceptance - self.target_acceptance)
            state.step_size = log_step.exp().clamp(self.min_step_size, self.max_step_size)
        # A row drawn twice into one minibatch (minibatches drawn with replacement) advanced two copies
        # of its chain from one state: one of them is kept, and both visits are counted.
        self.z[indices] = state.z
        self.step_sizes[indices] = state.step_size
        self.acceptance[indices] = acceptance
        self.visits.index_add_(0, indices, torch.ones_like(indices))
        return state.z

    def m_step(self, model, optimizer: torch.optim.Optimizer, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``weight_updates`` optimiser steps on −(1/M) Σ log p_θ(x|z); returns the last loss."""
        loss = torch.full((), math.nan)
        for _ in range(self.weight_updates):
            loss = -model.decode(z).log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.detach()

    def step(self, model, optimizer: torch.optim.Optimizer, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        z = self.e_step(model, x, indices)
        self.m_step(model, optimizer, x, z)
        return torch.full((), math.nan, dtype=x.dtype, device=x.device)

    def log_likelihood(
        self,
        model,
        data: torch.Tensor,
        indices: torch.Tensor | None = None,
        *,
        num_samples: int = PAPER_POSTERIOR_SAMPLES,
        leapfrog_steps: int = PAPER_LEAPFROG_STEPS,
        **options,
    ):
        """Appendix D estimate of log p_θ(x) for the rows of ``data`` under the MCEM-trained decoder.

        The chains start at the persistent samples of training rows ``indices`` (when given and
        :meth:`setup` has run), else at prior draws resampled by p(x|z) — never at the encoder,
        which MCEM does not train, nor at plain prior draws, which settle in minor modes of the
        sharp posteriors of a trained decoder (docs/results.md, Figure 3). Other options as :func:`aevb.evaluation.hmc_estimator.hmc_log_likelihood`; returns
        its (estimate, mean acceptance).
        """
        if indices is not None:
            self._check_setup()
            initial = self.z[indices]
        else:
            initial = "importance-resampled"
        return hmc_log_likelihood(
            model, data, num_samples=num_samples, leapfrog_steps=leapfrog_steps, initial=initial, **options
        )
