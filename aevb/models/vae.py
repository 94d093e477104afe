"""The variational auto-encoder (paper §3 and Appendix C).

* Encoder q_φ(z|x) = N(μ(x), diag σ²(x)): an MLP with two linear heads, μ and log σ² (App. C.2).
* Decoder p_θ(x|z): Bernoulli MLP from logits for binary data (App. C.1), or Gaussian MLP with
  a mean head and a per-dimension log-variance head (App. C.2); for Frey Face the mean goes
  through a sigmoid so it lies in (0, 1) (§5).
* Prior p(z) = N(0, I), no parameters.

The defaults are the paper's: one tanh hidden layer in each network, equal hidden sizes
(500 for MNIST, 200 for Frey Face, §5), parameters initialised from §5's N(0, 0.01) with 0.01 the
standard deviation, and — where the paper is silent — the encoder's log σ² head and the decoder's
output biases at zero, as the authors' code has both (anglepy ``models/VAE_Z_X.py``, 2014;
docs/results.md lists every setting the paper leaves open and where aevb's comes from).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence

from ..validation import require_count
from .buildable import check_buildable
from .config import OUTPUT_MEAN_CLIP, ModelConfig  # (ModelConfig is imported from here too: the model's home)
from .distributions import bernoulli_from_logits, diagonal_gaussian, standard_normal_prior
from .families import FamilyEncoder, default_estimator, get_family, posterior_centre
from .networks import bounded_log_variance, build_network
from .pretrained import PretrainedModel


@contextmanager
def evaluation_mode(model):
    """``model.eval()`` for the duration (no dropout/batch-norm updates), then its previous mode."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


class GaussianEncoder(nn.Module):
    """q_φ(z|x) = N(μ(x), diag σ²(x)) (App. C.2 with x and z swapped)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = build_network(config, "encoder", (config.latent_dim, config.latent_dim))
        self.log_variance_bound = config.log_variance_bound

    def forward(self, x: torch.Tensor) -> Distribution:
        """x: (..., D) → distribution with batch shape (...), event shape (J,)."""
        return diagonal_gaussian(*self.moments(x))

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(x) and log σ²(x), each (..., J), as tensors (what an exported encoder outputs)."""
        mean, log_var = self.net(x)
        return mean, bounded_log_variance(log_var, self.log_variance_bound)


class BernoulliDecoder(nn.Module):
    """p_θ(x|z) = Π_d Bernoulli(x_d; sigmoid(logits_d(z))) (App. C.1)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = build_network(config, "decoder", (config.data_dim,))

    def forward(self, z: torch.Tensor) -> Distribution:
        """z: (..., J) → distribution with batch shape (...), event shape (D,)."""
        (logits,) = self.net(z)
        return bernoulli_from_logits(logits)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = sigmoid(logits), (..., D): what the paper's figures show."""
        (logits,) = self.net(z)
        return torch.sigmoid(logits)


class GaussianDecoder(nn.Module):
    """p_θ(x|z) = N(μ(z), diag σ²(z)) (App. C.2); μ through a sigmoid when ``sigmoid_mean`` (§5).

    With ``decoder_variance="per-dimension"`` σ² is a learned vector that does not depend on z;
    with no hidden layer this is factor analysis, whose log p(x) is known in closed form.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.sigmoid_mean = config.sigmoid_mean
        shared_variance = config.decoder_variance == "per-dimension"
        heads = (config.data_dim,) if shared_variance else (config.data_dim, config.data_dim)
        self.net = build_network(config, "decoder", heads)
        self.log_var = nn.Parameter(torch.zeros(config.data_dim)) if shared_variance else None
        self.log_variance_bound = config.log_variance_bound

    def _mean_and_log_var(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.log_var is None:
            mean, log_var = self.net(z)
        else:
            (mean,) = self.net(z)
            log_var = self.log_var.expand_as(mean)
        return (torch.sigmoid(mean) if self.sigmoid_mean else mean), bounded_log_variance(
            log_var, self.log_variance_bound
        )

    def forward(self, z: torch.Tensor) -> Distribution:
        """z: (..., J) → distribution with batch shape (...), event shape (D,)."""
        return diagonal_gaussian(*self._mean_and_log_var(z))

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = μ(z), (..., D)."""
        return self._mean_and_log_var(z)[0]


DECODERS: dict[str, type[nn.Module]] = {"bernoulli": BernoulliDecoder, "gaussian": GaussianDecoder}


class VAE(nn.Module, PretrainedModel):
    """The variational auto-encoder of §3: encoder, decoder and the N(0, I) prior.

    Building one first checks that ``config`` can be built (:func:`aevb.models.buildable.check_buildable`:
    a posterior/prior pair with a finite KL, parameters that fit in the host's memory), so that an
    impossible size is a one-line AevbError before any layer is allocated, however the model is
    made (``VAE(config)``, :func:`aevb.models.build.build_model`, a model file being loaded).

    ``model.save_pretrained(directory)`` and ``VAE.from_pretrained(directory or "user/name")``
    share it the Hugging Face way (:class:`aevb.models.pretrained.PretrainedModel`, the ``[hub]``
    extra)."""

    @classmethod
    def builds(cls, config: ModelConfig) -> bool:
        """Whether ``config`` describes a model of this class itself (not of one derived from it):
        the VAE of §3 has no class labels and point estimates of the decoder's parameters."""
        return config.num_classes is None and config.decoder_posterior == "point"

    @classmethod
    def model_class_for(cls, config: ModelConfig) -> type[VAE] | None:
        """The class that builds the model of ``config``: ``cls`` or the first class derived from
        it (depth first, in the order they were defined) whose :meth:`builds` says so; None where
        none does."""
        pending = [cls]
        while pending:
            kind = pending.pop(0)
            if kind.builds(config):
                return kind
            pending[:0] = kind.__subclasses__()
        return None

    def __init__(self, config: ModelConfig):
        check_buildable(config)
        super().__init__()
        self.config = config
        if config.posterior == "gaussian":
            self.encoder = GaussianEncoder(config)
        else:
            self.encoder = FamilyEncoder(config)
        self.decoder = DECODERS[config.likelihood](config)
        self.register_buffer("_prior_loc", torch.zeros(config.latent_dim), persistent=False)
        self.reset_parameters()

    @property
    def input_width(self) -> int:
        """D, the columns of the rows that ``encode`` and the estimators take."""
        return self.config.data_dim

    @property
    def default_estimator(self) -> str:
        """The SGVB estimator this model is trained and evaluated with unless one is named: "B"
        (eq. 7) where KL(q ‖ p) has a closed form, else "A" (eq. 6)."""
        return default_estimator(self.config.posterior, self.config.prior)

    @property
    def shapes_only(self) -> bool:
        """Whether the model lives on the meta device (shapes, no values): its initialisation then
        draws nothing, since drawing there would route through torch's reference ops and import
        torch._dynamo, seconds of start-up."""
        return any(parameter.is_meta for parameter in self.parameters())

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every weight and bias from N(0, init_std²) (§5). With ``init="anglepy"``, then set
        the encoder's log σ² head (weights and biases) and the decoder's output biases to zero, as
        the authors' code does (anglepy ``models/DLVM.py`` and ``VAE_Z_X.py``, 2014): q(z|x) starts
        with σ² = 1 everywhere and the decoder at the middle of its range. With ``init="glorot"``
        every weight matrix from U(±√(6 / (fan_in + fan_out))) and everything else zero (Glorot &
        Bengio, 2010; the initialisation of Burda et al.'s code)."""
        if self.shapes_only:
            return
        with torch.no_grad():
            if self.config.init in ("normal", "anglepy"):
                for parameter in self.parameters():
                    parameter.normal_(0.0, self.config.init_std, generator=generator)
                if self.config.init == "anglepy":
                    self._zero_as_the_authors_code()
                return
            for parameter in self.parameters():
                if parameter.ndim >= 2:
                    nn.init.xavier_uniform_(parameter, generator=generator)
                else:
                    parameter.zero_()

    def _zero_as_the_authors_code(self) -> None:
        """The encoder's log σ² head (the second block of its heads, where q(z|x) is Gaussian) and
        every bias of the decoder's heads at zero."""
        encoder_heads = getattr(self.encoder.net, "heads", None)
        if isinstance(self.encoder, GaussianEncoder) and encoder_heads is not None:
            latent = self.config.latent_dim
            encoder_heads.weight[latent : 2 * latent].zero_()
            encoder_heads.bias[latent : 2 * latent].zero_()
        decoder_heads = getattr(self.decoder.net, "heads", None)
        if decoder_heads is not None and decoder_heads.bias is not None:
            decoder_heads.bias.zero_()

    def initialise_from_data(self, train: torch.Tensor) -> None:
        """With ``init="glorot"`` and a Bernoulli MLP decoder, start its output bias at the logit of
        the mean training image (Burda et al.'s code), so the first decoder predicts the mean
        image. ``train``: (N, D) training data (conditional models: (N, D + C)). Else nothing."""
        heads = getattr(self.decoder.net, "heads", None)
        if self.config.init != "glorot" or self.config.likelihood != "bernoulli" or heads is None:
            return
        with torch.no_grad():
            mean = train[:, : self.config.data_dim].mean(0).clamp(OUTPUT_MEAN_CLIP, 1 - OUTPUT_MEAN_CLIP)
            heads.bias.copy_(torch.logit(mean).to(heads.bias.dtype))

    def prior(self) -> Distribution:
        """p(z), event shape (J,): N(0, I), or the standard prior of the family ``config.prior``."""
        if self.config.prior != "gaussian":
            return get_family(self.config.prior).prior(
                self.config.latent_dim, device=self._prior_loc.device, dtype=self._prior_loc.dtype
            )
        return standard_normal_prior(self.config.latent_dim, device=self._prior_loc.device, dtype=self._prior_loc.dtype)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q_φ(z|x) for x of shape (..., D)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The SGVB estimate of the bound 𝓛(θ, φ; x) of every row of x (M, D) with one reparameterised
        sample (L = 1): (M,), nats, differentiable, so ``-model(x).mean()`` is Algorithm 1's loss per
        datapoint in a loop of your own. Estimator B (eq. 7) where KL(q ‖ p) has a closed form, else
        estimator A (eq. 6). The same numbers as :func:`aevb.objectives.estimators.estimator_b` (or
        ``estimator_a``) under the same draw — the reference, with any L and the fast evaluation
        path — which this module cannot import (objectives build on models)."""
        posterior = self.encode(x)
        z = posterior.rsample((1,))  # (1, M, J), as the estimators draw
        own = getattr(self, "decoder_log_prob", None)  # a conditional VAE's rows hold labels
        log_likelihood = (own(z, x) if own is not None else self.decode(z).log_prob(x))[0]
        try:
            return log_likelihood - kl_divergence(posterior, self.prior())
        except NotImplementedError:
            return log_likelihood + self.prior().log_prob(z[0]) - posterior.log_prob(z[0])

    def decode(self, z: torch.Tensor) -> Distribution:
        """p_θ(x|z) for z of shape (..., J)."""
        return self.decoder(z)

    @torch.no_grad()
    def draw_prior(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ p(z): (num_samples, J) on the model's device, drawn on the CPU so that a seeded CPU
        generator gives the same z on any device."""
        num_samples = require_count(num_samples, "num_samples", minimum=0)
        if self.config.prior == "gaussian":
            z = torch.randn(num_samples, self.config.latent_dim, generator=generator)
        else:
            prior = get_family(self.config.prior).prior(
                self.config.latent_dim, device="cpu", dtype=self._prior_loc.dtype
            )
            if generator is None:
                z = prior.sample((num_samples,))
            else:  # torch.distributions take no generator: seed a forked RNG from it
                seed = int(torch.randint(2**62, (), generator=generator))
                with torch.random.fork_rng(devices=[]):
                    # The CPU generator only (z is drawn on the CPU): torch.manual_seed would also
                    # reseed every GPU's, which the fork does not restore, and so change training's
                    # random stream when a tracker draws samples during a run on a GPU.
                    torch.default_generator.manual_seed(seed)
                    z = prior.sample((num_samples,))
        return z.to(self._prior_loc.device)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean images E[x|z] for z ~ p(z): (num_samples, D) — how the paper draws its samples."""
        return self.decoder.mean(self.draw_prior(num_samples, generator))

    def posterior_centre(self, posterior: Distribution) -> torch.Tensor:
        """The posterior's mean, or its median where the family has no mean (e.g. Cauchy): (M, J)."""
        if self.config.posterior == "gaussian":
            return posterior.mean
        return posterior_centre(posterior)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x|z] at z = μ(x), the posterior mean (the median where a family has no mean, e.g.
        Cauchy): (M, D) for x of shape (M, D)."""
        return self.decoder.mean(self.posterior_centre(self.encode(x)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
