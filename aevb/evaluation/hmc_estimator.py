"""The paper's marginal-likelihood estimator (Appendix D), batched over datapoints.

For each datapoint x:

1. draw L samples from the posterior p(z|x) ∝ p(z) p(x|z) with HMC (§5: L = 50, 4 leapfrog
   steps; chains start at the encoder's mean when there is a trained encoder — for a model
   trained without one (Monte Carlo EM), at a draw from the prior resampled by p(x|z) — and burn
   in first);
2. fit a density q(z) to them — here a full-covariance Gaussian, per datapoint;
3. draw L new posterior samples — the same chains, after a gap — and estimate

       p(x) ≈ ( (1/L) Σ_l q(z⁽ˡ⁾) / (p(z⁽ˡ⁾) p(x|z⁽ˡ⁾)) )⁻¹,

   which holds because 1/p(x) = ∫ p(z|x) q(z) / p(x, z) dz for any normalised q.

The estimator is consistent but, like every harmonic-mean estimator, its variance depends on q
having lighter tails than the posterior; the paper calls it reliable only for a low-dimensional
latent space (it used Nz = 3). A chain that stays in one mode of a multimodal posterior
estimates p(x) times that mode's posterior mass, so where it starts matters: from a plain prior
draw, chains of a Monte Carlo EM decoder settled in minor modes and the estimate came out 28–40
nats low (docs/results.md, Figure 3). The reported standard error is the delta-method error of the
average over the second set and ignores autocorrelation within a chain, so it is optimistic.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import torch
from torch.distributions import MultivariateNormal

from ..errors import AevbError
from ..models.families import PAPER_PRIOR, families_of
from ..models.vae import evaluation_mode
from ..progress import progress_bar
from ..validation import require_count, require_rows
from .decoding import decoder_log_prob
from .hmc import continue_hmc, sample_hmc
from .importance_sampling import LogLikelihoodEstimate, log_mean_exp_with_stderr

#: §5 / App. D: 50 posterior samples per datapoint, HMC with 4 leapfrog steps.
PAPER_POSTERIOR_SAMPLES = 50
PAPER_LEAPFROG_STEPS = 4


def _log_joint(model, x: torch.Tensor):
    prior = model.prior()

    def log_density(z: torch.Tensor) -> torch.Tensor:
        return prior.log_prob(z) + model.decode(z).log_prob(x)

    return log_density


#: Prior draws per datapoint that ``initial="importance-resampled"`` chooses a chain's start from.
RESAMPLING_DRAWS = 1000

#: (sample, chain) pairs of HMC samples held, and decoded, at once: the paper's 50 samples of 1000
#: chains (50,000 rows) fit in one chunk, as before; more samples per chain are streamed through
#: running moments and running log-sum-exps, so memory stays bounded for any L.
HMC_CHUNK_ROWS = 65536


def sample_moments(samples: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Moments of samples (L, C, J) per chain: (L, mean (C, J), scatter Σ (z − mean)(z − mean)ᵀ (C, J, J))."""
    mean = samples.mean(0)
    centred = samples - mean
    return samples.shape[0], mean, torch.einsum("lci,lcj->cij", centred, centred)


def merge_moments(
    first: tuple[int, torch.Tensor, torch.Tensor], second: tuple[int, torch.Tensor, torch.Tensor]
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The moments of two disjoint sets of samples from theirs (Chan, Golub & LeVeque, 1979): exact,
    and without the cancellation of Σzzᵀ − L·mean·meanᵀ."""
    count_a, mean_a, scatter_a = first
    count_b, mean_b, scatter_b = second
    count = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    scatter = scatter_a + scatter_b + torch.einsum("ci,cj->cij", delta, delta) * (count_a * count_b / count)
    return count, mean, scatter


def gaussian_from_moments(
    moments: tuple[int, torch.Tensor, torch.Tensor], covariance_scale: float = 1.0, jitter: float = 1e-6
) -> MultivariateNormal:
    """Per-chain Gaussian with the samples' mean and covariance (× ``covariance_scale``) from their
    :func:`sample_moments`: batch shape (C,)."""
    count, mean, scatter = moments
    covariance = covariance_scale * scatter / max(count - 1, 1)
    scale = covariance.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)
    identity = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
    return MultivariateNormal(mean, covariance + jitter * scale[:, None, None] * identity)


def fit_gaussian(samples: torch.Tensor, covariance_scale: float = 1.0, jitter: float = 1e-6) -> MultivariateNormal:
    """Per-chain Gaussian fitted by moments to samples (L, C, J), its covariance multiplied by
    ``covariance_scale``: batch shape (C,)."""
    return gaussian_from_moments(sample_moments(samples), covariance_scale, jitter)


def hmc_log_likelihood(
    model,
    data: torch.Tensor,
    *,
    num_samples: int = PAPER_POSTERIOR_SAMPLES,
    leapfrog_steps: int = PAPER_LEAPFROG_STEPS,
    burn_in: int = 200,
    target_acceptance: float = 0.9,
    covariance_scale: float = 1.0,
    gap: int = 50,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    initial: torch.Tensor | str = "encoder",
    progress: bool = False,
) -> tuple[LogLikelihoodEstimate, float]:
    """Appendix D estimate of log p(x) for every row of ``data`` (N, D), nats.

    ``initial`` is where the chains start: ``"encoder"`` (default) the encoder's mean q(z|x), or
    z = 0 for a model without ``encode``; ``"importance-resampled"`` one of
    :data:`RESAMPLING_DRAWS` draws from the prior p(z), chosen with probability ∝ p(x|z)
    (sampling-importance-resampling: approximately a posterior draw, in the posterior's mass
    whatever the encoder) — the start for a model whose encoder was not trained (Monte Carlo
    EM); ``"zeros"`` z = 0, the prior's mode; ``"prior"`` a plain draw from p(z); or an (N, J)
    tensor of starting points, one per row of ``data``. Draws use ``generator``.

    Returns the estimate and the mean HMC acceptance rate over the retained transitions.
    ``progress``: a bar over the datapoints, with the time left.
    """
    require_rows(data, model)
    num_samples, leapfrog_steps = (
        require_count(num_samples, "num_samples"),
        require_count(leapfrog_steps, "leapfrog_steps"),
    )
    burn_in, gap = require_count(burn_in, "burn_in", minimum=0), require_count(gap, "gap", minimum=0)
    batch_size = require_count(batch_size, "batch_size")
    latent_dim = _check_chains(model, data, initial)
    check_hmc_samples(num_samples, latent_dim)
    started = time.perf_counter()
    values, stderrs, acceptance = [], [], []
    bar = progress_bar(
        data.shape[0], unit="point", desc=f"log p(x), HMC (App. D), L = {num_samples}", enabled=progress, logged=True
    )
    with evaluation_mode(model):
        for start in range(0, data.shape[0], batch_size):
            x = data[start : start + batch_size]
            # One chain per datapoint: burn-in, the first set (fits q), a gap of ``gap`` transitions,
            # the second set (estimates). The same chain keeps both sets in the same mode of a
            # multimodal posterior — independent chains can settle in different modes, and a q
            # fitted in one then scores the other's samples near zero (log p(x) → +∞). The gap
            # decorrelates the second set from the points q was fitted to, which otherwise biases
            # log p(x) low (−0.12 nats on factor analysis without it).
            log_density = _log_joint(model, x)
            initial_rows = initial[start : start + batch_size] if isinstance(initial, torch.Tensor) else initial
            start_z = _starting_points(model, x, initial_rows, latent_dim, generator)
            # Both sets are drawn a chunk of samples at a time (the chains run on unchanged, so the
            # draws are those of one long run) and never held whole: the first through its running
            # moments, the second through running log Σu and log Σu².
            chunk = max(1, HMC_CHUNK_ROWS // x.shape[0])
            hmc = {"leapfrog_steps": leapfrog_steps, "generator": generator}
            first, state, _ = sample_hmc(
                log_density,
                start_z,
                min(chunk, num_samples),
                burn_in=burn_in,
                target_acceptance=target_acceptance,
                **hmc,
            )
            moments = sample_moments(first)
            del first
            while moments[0] < num_samples:
                more, state, _ = continue_hmc(log_density, state, min(chunk, num_samples - moments[0]), **hmc)
                moments = merge_moments(moments, sample_moments(more))
            density = gaussian_from_moments(moments, covariance_scale)
            _, state, _ = continue_hmc(log_density, state, gap, **hmc)
            log_sum, log_sum_squares, accepted = _score_second_set(log_density, density, state, num_samples, chunk, hmc)
            log_mean_u, stderr = log_mean_exp_with_stderr(log_sum, log_sum_squares, num_samples)
            values.append(-log_mean_u)
            stderrs.append(stderr)
            acceptance.append(accepted)
            bar.update(x.shape[0])
    bar.close()
    estimate = LogLikelihoodEstimate.from_per_datapoint(
        torch.cat(values), torch.cat(stderrs), num_samples, time.perf_counter() - started
    )
    mean_acceptance = torch.cat(acceptance).mean().item()
    return estimate, mean_acceptance if math.isfinite(mean_acceptance) else float("nan")


def check_hmc_samples(num_samples: int, latent_dim: int, setting: str = "num_samples") -> None:
    """A one-line error, naming ``setting``, when L = ``num_samples`` posterior samples cannot fit
    App. D's full-covariance Gaussian in J = ``latent_dim`` dimensions: below J + 2 its covariance is
    singular or its inverse unusable, and the estimate nonsense (log p(x) > 0 for binary data)."""
    if num_samples < latent_dim + 2:
        raise AevbError(
            f"`{setting}` = {num_samples} is too few for HMC in {latent_dim} latent dimensions: "
            f"fitting a full-covariance Gaussian needs at least J + 2 = {latent_dim + 2}"
        )


def _check_chains(model, data: torch.Tensor, initial: torch.Tensor | str) -> int:
    """One-line errors for chains HMC cannot run (a prior off the real line, a bad ``initial``);
    returns the latent dimension J."""
    config = getattr(model, "config", None)
    if config is not None and families_of(config)[1] != PAPER_PRIOR:
        from ..models.families import check_hmc_prior

        check_hmc_prior(config)  # HMC moves z in all of R^J
    latent_dim = model.prior().event_shape[0]
    if isinstance(initial, torch.Tensor):
        if initial.shape != (data.shape[0], latent_dim):
            raise AevbError(f"initial must have shape {(data.shape[0], latent_dim)}, got {tuple(initial.shape)}")
    elif initial not in CHAIN_STARTS:
        raise AevbError(f"initial must be a tensor or one of {', '.join(map(repr, CHAIN_STARTS))}; got {initial!r}")
    return latent_dim


@torch.no_grad()
def _starting_points(
    model, x: torch.Tensor, initial: torch.Tensor | str, latent_dim: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Where the chains of the rows x (B, D) start, (B, J): see ``initial`` of :func:`hmc_log_likelihood`."""
    if isinstance(initial, torch.Tensor):
        return initial.to(device=x.device, dtype=x.dtype)
    if initial == "encoder" and hasattr(model, "encode"):
        posterior = model.encode(x)
        # The mean, or the median where a family has none (Cauchy): VAE.posterior_centre.
        centre = getattr(model, "posterior_centre", None)
        return centre(posterior) if centre is not None else posterior.mean
    if initial == "prior" and families_of(getattr(model, "config", None))[1] == PAPER_PRIOR:
        return torch.randn(x.shape[0], latent_dim, generator=generator, dtype=x.dtype).to(x.device)
    if initial == "prior":  # torch.distributions take no generator
        seed = int(torch.randint(2**62, (), generator=generator))
        with _seeded_global_generator(seed, x.device):
            return model.prior().sample((x.shape[0],)).to(dtype=x.dtype, device=x.device)
    if initial == "importance-resampled":
        return importance_resampled(model, x, RESAMPLING_DRAWS, generator)
    return torch.zeros(x.shape[0], latent_dim, dtype=x.dtype, device=x.device)


#: Where :func:`hmc_log_likelihood`'s chains can start (besides a tensor of points).
CHAIN_STARTS = ("encoder", "importance-resampled", "zeros", "prior")


@contextmanager
def _seeded_global_generator(seed: int, device: torch.device):
    """torch's global generator seeded with ``seed`` inside the block and restored after it:
    ``Distribution.sample`` takes no generator, so draws seeded from a caller's generator go
    through a forked global one."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def importance_resampled(model, x: torch.Tensor, draws: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row of x (B, D): one of ``draws`` samples from the prior p(z), chosen with
    probability ∝ p(x|z) (sampling-importance-resampling, Rubin 1988): (B, J). As ``draws`` grows
    it becomes a draw from the posterior p(z|x), so a chain started there begins in the posterior's
    mass, a mode chosen by its mass, without an encoder."""
    prior = model.prior()
    seed = int(torch.randint(2**62, (), generator=generator))
    rows_per_chunk = max(1, HMC_CHUNK_ROWS // draws)
    starts = []
    with _seeded_global_generator(seed, x.device):
        for first in range(0, x.shape[0], rows_per_chunk):
            rows = x[first : first + rows_per_chunk]
            z = prior.sample((draws, rows.shape[0])).to(dtype=x.dtype, device=x.device)  # (draws, B, J)
            log_weights = decoder_log_prob(model, z, rows)  # (draws, B)
            chosen = torch.multinomial(torch.softmax(log_weights.T.double(), -1).cpu(), 1).squeeze(1).to(x.device)
            starts.append(z[chosen, torch.arange(rows.shape[0], device=x.device)])
    return torch.cat(starts)


def _score_second_set(log_density, density, state, num_samples: int, chunk: int, hmc: dict):
    """Run the chains on for the second set of ``num_samples`` and score it under the fitted
    ``density``: running log Σu and log Σu² per chain, u = q(z)/p(x, z), and each chain's mean
    acceptance over the set."""
    log_sum = log_sum_squares = accepted = None
    for drawn in range(0, num_samples, chunk):
        count = min(chunk, num_samples - drawn)
        second, state, chunk_accepted = continue_hmc(log_density, state, count, **hmc)
        with torch.no_grad():
            log_u = (density.log_prob(second) - log_density(second)).double()  # (chunk, B)
            chunk_sum, chunk_squares = torch.logsumexp(log_u, 0), torch.logsumexp(2 * log_u, 0)
        if log_sum is None:
            log_sum, log_sum_squares, accepted = chunk_sum, chunk_squares, chunk_accepted
        else:  # accepted: the running mean acceptance per chain over the second set
            log_sum = torch.logaddexp(log_sum, chunk_sum)
            log_sum_squares = torch.logaddexp(log_sum_squares, chunk_squares)
            accepted = accepted + (chunk_accepted - accepted) * (count / (drawn + count))
    return log_sum, log_sum_squares, accepted
