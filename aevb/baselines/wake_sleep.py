"""The wake-sleep algorithm (Hinton, Dayan, Frey & Neal, 1995): the paper's on-line baseline (§5, Fig. 2).

It learns the same two networks as AEVB — the VAE's encoder is the recognition model q_φ(z|x),
its decoder the generative model p_θ(x|z) — with the same optimiser and minibatches, but with two
separate objectives and no reparameterisation gradient:

* wake phase (θ): z ~ q_φ(z|x) for each datapoint of the minibatch, drawn without a gradient, and
  a step up (1/M) Σ log p_θ(x|z) — the decoder learns to explain the data from the recogniser's
  guesses of z;
* sleep phase (φ): a "dream" z ~ p(z), x ~ p_θ(x|z) (a binary draw for a Bernoulli decoder, a
  Gaussian draw for a Gaussian one), drawn without a gradient, and a step up (1/M') Σ log q_φ(z|x) —
  the recogniser learns to invert the generative model on its own fantasies. In expectation it
  minimises E_{p_θ(x)} KL(p_θ(z|x) ‖ q_φ(z|x)), the reverse of the KL that the bound contains.

Both losses are summed and back-propagated once: the wake sample and the dream are detached, so the
wake loss reaches only θ and the sleep loss only φ, and the sum's gradient is exactly the two
phases' gradients side by side. The optimiser's weight decay (the N(0, I) prior of §5) applies to
both parameter sets as for AEVB.

Wake-sleep optimises no single objective; to compare it with AEVB on the paper's axis, each step
reports the lower bound 𝓛 estimated with the wake sample (estimator B at L samples:
−KL(q ‖ p) + log p(x|z)), which costs nothing extra, and the trainer evaluates the bound on the
training and validation sets exactly as for AEVB.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from ..errors import AevbError
from ..models.families import PAPER_POSTERIOR, PAPER_PRIOR, families_of
from ..training.algorithm import Algorithm, refuse_conditional, refuse_decoder_posterior
from ..training.config import TrainConfig
from ..training.distributed import SINGLE_PROCESS, ProcessGroup


class WakeSleep(Algorithm):
    """Wake-sleep as an :class:`aevb.training.Algorithm`.

    Args:
        num_samples: wake samples z ~ q(z|x) per datapoint (L); the wake loss and the reported
            bound average over them.
        dream_batch_size: dreams per sleep phase; ``None`` (default) uses the minibatch size.
    """

    name = "wake-sleep"
    has_bound = True
    #: whether a sigmoid-mean Gaussian decoder's dreams are clipped to [0, 1], as the authors' code does
    clips_dreams = True

    @classmethod
    def from_config(cls, config: TrainConfig) -> WakeSleep:
        """L of the run's settings is the wake phase's samples per datapoint."""
        return cls(num_samples=config.num_samples)

    def __init__(self, num_samples: int = 1, dream_batch_size: int | None = None):
        if num_samples < 1:
            raise AevbError(f"wake-sleep needs at least one wake sample per datapoint, got {num_samples}")
        if dream_batch_size is not None and dream_batch_size < 1:
            raise AevbError(f"dream batch size must be a positive integer, got {dream_batch_size}")
        self.num_samples = num_samples
        self.dream_batch_size = dream_batch_size

    def check_model(self, config) -> None:
        refuse_conditional(self.name, config)
        refuse_decoder_posterior(config)
        pair = families_of(config)
        if pair != (PAPER_POSTERIOR, PAPER_PRIOR):
            raise AevbError(f"wake-sleep is implemented for the Gaussian posterior and prior, not {pair[0]}/{pair[1]}")

    def setup(self, model, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        pass

    def wake_loss(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Wake phase on minibatch x (M, D): the loss −(1/M) Σ log p_θ(x|z), z ~ q_φ(z|x) detached
        (it depends on θ only), and the per-datapoint bound estimate (M,), detached."""
        with torch.no_grad():
            posterior = model.encode(x)
            z = posterior.sample((self.num_samples,))  # (L, M, J)
            kl = kl_divergence(posterior, model.prior())  # (M,)
        reconstruction = model.decode(z).log_prob(x).mean(0)  # (M,), depends on θ
        return -reconstruction.mean(), (reconstruction.detach() - kl)

    def sleep_loss(self, model, batch_size: int) -> torch.Tensor:
        """Sleep phase: the loss −(1/M') Σ log q_φ(z|x) over M' dreams z ~ p(z), x ~ p_θ(x|z),
        both detached (it depends on φ only). A Gaussian decoder whose mean goes through a sigmoid
        (data in [0, 1], Frey Face) dreams within [0, 1], as the authors' code clips its dreams
        (anglepy ``models/DLVM.py`` ``gen_xz``, ``sigmoidgaussian``, 2014-04)."""
        with torch.no_grad():
            z = model.prior().sample((batch_size,))  # (M', J)
            x = model.decode(z).sample()  # (M', D)
            config = getattr(model, "config", None)
            sigmoid_gaussian = getattr(config, "likelihood", None) == "gaussian" and getattr(
                config, "sigmoid_mean", False
            )
            if self.clips_dreams and sigmoid_gaussian:
                x = x.clamp(0.0, 1.0)
        return -model.encode(x).log_prob(z).mean()

    def step(self, model, optimizer: torch.optim.Optimizer, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        wake, bound = self.wake_loss(model, x)
        sleep = self.sleep_loss(model, self.dream_batch_size or x.shape[0])
        optimizer.zero_grad(set_to_none=True)
        (wake + sleep).backward()
        optimizer.step()
        return bound.sum()


class WakeSleepUnclippedDreams(WakeSleep):
    """Wake-sleep with a sigmoid-mean Gaussian decoder's dreams left as drawn, outside [0, 1] too
    (aevb's wake-sleep before session 17). The authors' code clips them; whether wake-sleep on
    Frey Face leaves the level of a decoder that ignores z depends on it (docs/results.md)."""

    name = "wake-sleep-unclipped"
    clips_dreams = False
