"""Hybrid (Hamiltonian) Monte Carlo, batched over independent chains (Duane et al., 1987).

Used by the paper to sample the posterior p(z|x) ∝ p(z) p(x|z) of each datapoint: in the
marginal-likelihood estimator of Appendix D (4 leapfrog steps) and in Monte Carlo EM (Appendix
E, 10 leapfrog steps). Each chain is one row of ``z`` and has its own step size, adapted during
burn-in towards a target acceptance rate (the paper's MCEM uses 90%) by dual averaging of log ε;
after burn-in the step sizes are frozen, so the retained samples come from a valid
Metropolis–Hastings kernel that leaves the posterior invariant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LogDensity = Callable[[torch.Tensor], torch.Tensor]


def log_density_and_gradient(log_density: LogDensity, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(z) per chain, (C,), and ∇_z log π(z), (C, J); chains are independent rows of z."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        (gradient,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), gradient


@dataclass
class HMCState:
    """The chains' positions, log densities, gradients and step sizes (all batched over chains)."""

    z: torch.Tensor  # (C, J)
    log_density: torch.Tensor  # (C,)
    gradient: torch.Tensor  # (C, J)
    step_size: torch.Tensor  # (C,)


def hmc_step(
    log_density: LogDensity, state: HMCState, leapfrog_steps: int, generator: torch.Generator | None = None
) -> tuple[HMCState, torch.Tensor]:
    """One HMC transition for every chain: fresh momentum, ``leapfrog_steps`` leapfrog steps,
    Metropolis accept/reject. Returns the new state and the acceptance probabilities (C,)."""
    step = state.step_size.unsqueeze(-1)
    momentum = torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype).to(state.z.device)
    initial_energy = -state.log_density + 0.5 * momentum.square().sum(-1)
    z, gradient = state.z, state.gradient
    momentum = momentum + 0.5 * step * gradient
    for index in range(leapfrog_steps):
        z = z + step * momentum
        value, gradient = log_density_and_gradient(log_density, z)
        if index < leapfrog_steps - 1:
            momentum = momentum + step * gradient
    momentum = momentum + 0.5 * step * gradient
    energy = -value + 0.5 * momentum.square().sum(-1)
    log_accept = (initial_energy - energy).clamp(max=0.0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
    uniform = torch.rand(log_accept.shape, generator=generator, dtype=log_accept.dtype).to(z.device)
    accept = uniform.log() < log_accept
    keep = accept.unsqueeze(-1)
    new_state = HMCState(
        z=torch.where(keep, z, state.z),
        log_density=torch.where(accept, value, state.log_density),
        gradient=torch.where(keep, gradient, state.gradient),
        step_size=state.step_size,
    )
    return new_state, log_accept.exp()


def sample_hmc(
    log_density: LogDensity,
    initial: torch.Tensor,
    num_samples: int,
    *,
    leapfrog_steps: int = 4,
    burn_in: int = 200,
    initial_step_size: float = 0.1,
    target_acceptance: float = 0.9,
    thinning: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, HMCState, torch.Tensor]:
    """Run HMC chains from ``initial`` (C, J): ``burn_in`` adapting transitions, then
    ``num_samples`` × ``thinning`` transitions keeping every ``thinning``-th state.

    Step sizes are adapted per chain by dual averaging (Hoffman & Gelman, 2014, §3.2, with their
    constants γ = 0.05, t₀ = 10, κ = 0.75): it averages the acceptance statistics, so a few early
    rejections far from the mode cannot collapse a chain's step size, and it ends at the averaged
    iterate. Returns samples (num_samples, C, J), the final state (to continue sampling), and the
    mean acceptance probability per chain over the retained transitions (C,).
    """
    value, gradient = log_density_and_gradient(log_density, initial)
    state = HMCState(
        initial.detach(),
        value,
        gradient,
        torch.full(value.shape, initial_step_size, dtype=initial.dtype, device=initial.device),
    )
    shrink_towards = math.log(10 * initial_step_size)
    gamma, t0, kappa = 0.05, 10.0, 0.75
    error_average = torch.zeros_like(state.step_size)
    log_step_average = torch.zeros_like(state.step_size)
    for iteration in range(1, burn_in + 1):
        state, acceptance = hmc_step(log_density, state, leapfrog_steps, generator)
        weight = 1.0 / (iteration + t0)
        error_average = (1 - weight) * error_average + weight * (target_acceptance - acceptance)
        log_step = shrink_towards - math.sqrt(iteration) / gamma * error_average
        averaging = iteration**-kappa
        log_step_average = averaging * log_step + (1 - averaging) * log_step_average
        state.step_size = log_step.exp()
    if burn_in:
        state.step_size = log_step_average.exp()
    return continue_hmc(
        log_density, state, num_samples, leapfrog_steps=leapfrog_steps, thinning=thinning, generator=generator
    )


def continue_hmc(
    log_density: LogDensity,
    state: HMCState,
    num_samples: int,
    *,
    leapfrog_steps: int = 4,
    thinning: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, HMCState, torch.Tensor]:
    """Draw ``num_samples`` more samples from chains in ``state`` with frozen step sizes."""
    samples, acceptance_total = [], torch.zeros_like(state.log_density)
    for _ in range(num_samples):
        for _ in range(thinning):
            state, acceptance = hmc_step(log_density, state, leapfrog_steps, generator)
            acceptance_total = acceptance_total + acceptance
        samples.append(state.z)
    return torch.stack(samples), state, acceptance_total / (num_samples * thinning)
