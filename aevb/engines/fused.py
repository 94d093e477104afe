"""The fused engine: the SGVB estimators' forward pass and their hand-derived gradients in torch
operations, written into preallocated buffers (Algorithm 1 without autograd's graph).

Why. The paper's MNIST model does eleven matrix products per step; everything else (autograd's
graph, about sixty small elementwise kernels, a fresh allocation for every activation and
gradient, the optimiser's bookkeeping) adds much to that (the measured share is in
docs/performance.md). Here the same products write into buffers that live for the whole run
(``torch.addmm(..., out=)``), gradients go straight into ``param.grad``, and the elementwise work
is a handful of in-place kernels. The values come from the torch references (App. B's KL
:func:`aevb.models.distributions.gaussian_kl_to_standard_normal`, the decoders' ``log_prob``,
:func:`aevb.models.networks.bounded_log_variance`); the gradients are derived by hand below and tested
against autograd on those references (``tests/test_fused.py``, ``tests/test_engines.py``). The
draws of ε come from the global generator exactly as ``Normal.rsample`` takes them, so any
engine continues another's run.

Derivation (per minibatch of M points, L samples, loss = −(1/M) Σ_i 𝓛̃ᵢ, weights wₗᵢ):

* B (eq. 7): wₗᵢ = 1/(LM); ∂loss/∂μ = μ/M and ∂loss/∂log σ² = ½(σ² − 1)/M from the closed-form
  KL (App. B), plus the reparameterised path z = μ + σε through the decoder.
* A (eq. 6): wₗᵢ = 1/(LM); the prior adds ∂/∂z log p(z) = −z; −log q(z|x) along the path
  z = μ + σε has total derivative 0 in μ and +½ in log σ² (its ε-terms cancel), i.e. the entropy.
* IWAE (k = L): as A with wₗᵢ = softmaxₗ(log wₗᵢ)/M, the self-normalised importance weights.
* Decoder: Bernoulli ∂ log p/∂logits = x − sigmoid(logits); Gaussian ∂/∂μ = (x − μ)/σ²,
  ∂/∂log σ² = ½((x − μ)²/σ² − 1), times μ(1 − μ) through a sigmoid mean (§5, Frey Face).
* Bounded log-variance log σ² = B·tanh(raw/B): ∂/∂raw = ∂/∂log σ² · (1 − (log σ²/B)²).

Serves :class:`aevb.models.vae.VAE` exactly (any depth and width, the activations of
:data:`aevb.engines.activations.FUSED_ACTIVATIONS`, both decoders and both decoder-variance
modes) with estimators A, B and IWAE and any L (:func:`unsupported_reason`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models.activations import ACTIVATIONS
from ..models.distributions import bernoulli_from_logits, diagonal_gaussian, gaussian_kl_to_standard_normal
from ..models.families import PAPER_POSTERIOR, PAPER_PRIOR, families_of
from ..models.networks import MLP, bounded_log_variance
from ..models.vae import VAE, BernoulliDecoder, GaussianDecoder, GaussianEncoder
from ..process_group import Shard
from .activations import FUSED_ACTIVATIONS, FusedActivation
from .base import Engine, EngineRequest, Gradient

FUSED_ESTIMATORS = ("A", "B", "IWAE")


def unsupported_reason(model: nn.Module, estimator: str | None) -> str | None:
    """Why the hand-derived gradients do not cover this model and estimator, or None if they do."""
    config = getattr(model, "config", None)
    if getattr(config, "num_classes", None) is not None:
        return "conditional models (class labels as inputs) train with autograd"
    if getattr(config, "architecture", "mlp") != "mlp":
        return f"{config.architecture} networks train with autograd"
    if getattr(config, "decoder_posterior", "point") != "point":
        return "full variational Bayes (a posterior over the decoder's parameters, App. F) has no fused gradient"
    if type(model) is not VAE:
        return f"model is a {type(model).__name__}, not an aevb VAE"
    families = families_of(model.config)
    if families != (PAPER_POSTERIOR, PAPER_PRIOR):
        return (
            f"posterior {families[0]} with prior {families[1]}: the fused gradients are derived for the "
            "Gaussian posterior and N(0, I) prior only"
        )
    if type(model.encoder) is not GaussianEncoder:
        return f"encoder {type(model.encoder).__name__} has no fused gradient"
    if type(model.decoder) not in (BernoulliDecoder, GaussianDecoder):  # the likelihoods derived above
        return f"decoder {type(model.decoder).__name__} has no fused gradient"
    if estimator is None or estimator.upper() not in FUSED_ESTIMATORS:
        return f"estimator {estimator} has no fused gradient"
    if model.config.activation not in FUSED_ACTIVATIONS:
        return f"activation {model.config.activation} has no fused derivative"
    for net in (model.encoder.net, model.decoder.net):
        if type(net) is not MLP or any(not isinstance(m, (nn.Linear, *ACTIVATIONS.values())) for m in net.hidden):
            return "network is not a plain MLP"
    return None


class Layer:
    """One linear layer (+ activation) with its forward and backward buffers for up to R rows."""

    def __init__(self, linear: nn.Linear, activation: FusedActivation | None, rows: int):
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = activation
        options = {"dtype": self.weight.dtype, "device": self.weight.device}
        out_features, in_features = self.weight.shape
        self.pre = torch.empty(rows, out_features, **options)
        self.out = torch.empty(rows, out_features, **options) if activation is not None else self.pre
        self.grad_in = torch.empty(rows, in_features, **options)
        self.input: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.shape[0]
        self.input = inputs
        pre = torch.addmm(self.bias, inputs, self.weight.t(), out=self.pre[:rows])
        if self.activation is None:
            return pre
        return self.activation.forward(pre, self.out[:rows])

    def backward(self, grad_out: torch.Tensor, need_input_grad: bool = True) -> torch.Tensor | None:
        """grad_out: ∂loss/∂(layer output), overwritten. Writes the parameter gradients."""
        rows = grad_out.shape[0]
        if self.activation is not None:
            self.activation.backward(grad_out, self.pre[:rows], self.out[:rows])
        torch.mm(grad_out.t(), self.input, out=self.weight.grad)
        torch.sum(grad_out, dim=0, out=self.bias.grad)
        if not need_input_grad:
            return None
        return torch.mm(grad_out, self.weight, out=self.grad_in[:rows])


def hidden_linears(net: MLP) -> list[nn.Linear]:
    return [module for module in net.hidden if isinstance(module, nn.Linear)]


def network_layers(net: MLP, activation: str, rows: int, layer_type: type[Layer] = Layer) -> list[Layer]:
    act = FUSED_ACTIVATIONS[activation]
    return [layer_type(linear, act, rows) for linear in hidden_linears(net)] + [layer_type(net.heads, None, rows)]


class FusedStep:
    """Computes the minibatch SGVB loss's gradient into ``param.grad`` for every parameter.

    Args:
        model: an :class:`aevb.models.vae.VAE` (see :func:`unsupported_reason`).
        estimator: "A", "B" or "IWAE" (§2.3; IWAE with k = L).
        num_samples: L.
        batch_size: the largest minibatch M it will see (buffers are sized for it).

    Calling it on x of shape (M, D) returns the sum over the minibatch of the per-datapoint bound
    estimates (0-dim tensor, nats). Gradients are of the loss −(1/M) Σ 𝓛̃ᵢ, as
    ``loss.backward()`` on :mod:`aevb.objectives.estimators` would leave them (to rounding).
    """

    layer_type: type[Layer] = Layer

    def __init__(self, model: VAE, estimator: str, num_samples: int, batch_size: int):
        reason = unsupported_reason(model, estimator)
        if reason is not None:
            raise ValueError(f"no fused step: {reason}")
        config = model.config
        self.model = model
        self.batch_size = batch_size
        self.estimator = estimator.upper()
        self.num_samples = num_samples
        self.latent_dim = config.latent_dim
        self.likelihood = config.likelihood
        self.sigmoid_mean = config.sigmoid_mean
        self.shared_log_var = getattr(model.decoder, "log_var", None)
        self.bound = config.log_variance_bound
        rows = batch_size * num_samples
        self.encoder = network_layers(model.encoder.net, config.activation, batch_size, self.layer_type)
        self.decoder = network_layers(model.decoder.net, config.activation, rows, self.layer_type)
        self.parameters = list(model.parameters())
        self._ensure_gradient_buffers()
        self.options = {"dtype": self.encoder[0].weight.dtype, "device": self.encoder[0].weight.device}
        self._grad_out = torch.empty(rows, self.decoder[-1].weight.shape[0], **self.options)
        self._log_var_source: torch.Tensor | None = None
        self._grad_heads = torch.empty(batch_size, 2 * config.latent_dim, **self.options)
        self.skipped = False

    def _ensure_gradient_buffers(self) -> None:
        # The gradients are written into param.grad, views of one flat buffer (so that the numeric
        # guard checks them in one reduction); something else (zero_grad(set_to_none=True), a
        # user) may have dropped or replaced them since the last step.
        flat = getattr(self, "flat_gradient", None)
        if flat is not None and all(p.grad is view for p, view in zip(self.parameters, self._gradient_views)):
            return
        first = self.parameters[0]
        self.flat_gradient = torch.zeros(
            sum(p.numel() for p in self.parameters), dtype=first.dtype, device=first.device
        )
        self._gradient_views = [
            view.view_as(p)
            for p, view in zip(self.parameters, self.flat_gradient.split([p.numel() for p in self.parameters]))
        ]
        for parameter, view in zip(self.parameters, self._gradient_views):
            if parameter.grad is not None:
                view.copy_(parameter.grad)
            parameter.grad = view

    def __call__(
        self, x: torch.Tensor, noise: torch.Tensor | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.Tensor:
        """x: (M, D); ``noise``: optional ε (L, M, J), else drawn here. Returns Σ_i 𝓛̃ᵢ (0-dim).
        ``optimizer``: also apply its update, where the step can (:class:`aevb.engines.native.NativeStep`)."""
        # (no autograd here: set directly, cheaper than the no_grad context manager; docs/performance.md)
        grad_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            self._ensure_gradient_buffers()
            self.skipped = False
            return self._step(x, noise, optimizer)
        finally:
            torch.set_grad_enabled(grad_enabled)

    def _step(self, x: torch.Tensor, noise: torch.Tensor | None, optimizer: torch.optim.Optimizer | None):
        if optimizer is not None:
            raise ValueError("the fused step in torch operations does not apply optimisers")
        batch, samples, latent = x.shape[0], self.num_samples, self.latent_dim
        # Encoder q(z|x) = N(μ, diag σ²).
        h = x
        for layer in self.encoder:
            h = layer.forward(h)
        mean, log_var = h[:, :latent], bounded_log_variance(h[:, latent:], self.bound)
        std = torch.exp(0.5 * log_var)
        # Same call, shape and generator as Normal.rsample((L,)) in the autograd estimators.
        eps = torch.empty(samples, batch, latent, dtype=x.dtype, device=x.device).normal_() if noise is None else noise
        z = torch.addcmul(mean, std, eps).view(samples * batch, latent)

        g = z
        for layer in self.decoder:
            g = layer.forward(g)
        log_lik, grad_out = self._decoder_terms(g, x, samples, batch)  # (L, M)

        z_lm = z.view(samples, batch, latent)
        weights, weight = None, 1.0 / (samples * batch)
        if self.estimator == "B":
            bound_sum = log_lik.sum() / samples - gaussian_kl_to_standard_normal(mean, log_var).sum()
        else:
            log_w = log_lik + self.model.prior().log_prob(z_lm) - diagonal_gaussian(mean, log_var).log_prob(z_lm)
            if self.estimator == "A":
                bound_sum = log_w.sum() / samples
            else:
                bound_sum = (torch.logsumexp(log_w, dim=0) - math.log(samples)).sum()
                weights = torch.softmax(log_w, dim=0).div_(batch)  # (L, M)

        # Backward. ∂loss/∂(decoder output) = −w · ∂log p/∂out.
        def scale_(tensor: torch.Tensor) -> torch.Tensor:  # tensor ← −w · tensor, per (sample, point)
            if weights is None:
                return tensor.mul_(-weight)
            return tensor.view(samples, batch, -1).mul_(weights.unsqueeze(-1)).neg_()

        scale_(grad_out)
        if self._log_var_source is not None:  # a per-dimension decoder variance: sum over rows
            scale_(self._log_var_source)
            self._shared_log_var_gradient()
        grad = grad_out
        for layer in reversed(self.decoder):
            grad = layer.backward(grad)
        grad_z = grad.view(samples, batch, latent)  # ∂loss/∂z
        if self.estimator != "B":  # log p(z) = −½‖z‖²: ∂(−w log p(z))/∂z = w z
            if weights is None:
                grad_z.add_(z_lm, alpha=weight)
            else:
                grad_z.addcmul_(z_lm, weights.unsqueeze(-1))

        grad_heads = self._grad_heads[:batch]
        grad_mean, grad_log_var = grad_heads[:, :latent], grad_heads[:, latent:]
        torch.sum(grad_z, dim=0, out=grad_mean)
        torch.sum(grad_z * eps, dim=0, out=grad_log_var)
        grad_log_var.mul_(0.5 * std)  # dz/dlog σ² = ½σε
        if self.estimator == "B":
            grad_mean.add_(mean, alpha=1.0 / batch)
            grad_log_var.add_(std.square().sub_(1.0), alpha=0.5 / batch)
        else:  # entropy of q along the path: −½ per dimension per point
            grad_log_var.sub_(0.5 / batch)
        self._through_bound_(grad_log_var, log_var)
        grad = grad_heads
        for index, layer in reversed(list(enumerate(self.encoder))):
            grad = layer.backward(grad, need_input_grad=index > 0)
        return bound_sum.detach()

    def _shared_log_var_gradient(self) -> None:
        """The decoder's per-dimension log-variance: its gradient, the rows' sum (already −w-scaled)."""
        torch.sum(self._log_var_source, dim=0, out=self.shared_log_var.grad)
        self._through_bound_(self.shared_log_var.grad, bounded_log_variance(self.shared_log_var.detach(), self.bound))

    def _through_bound_(self, grad: torch.Tensor, log_var: torch.Tensor) -> None:
        """∂/∂raw = ∂/∂log σ² · (1 − (log σ² / B)²) under log σ² = B·tanh(raw/B), in place."""
        if self.bound is not None:
            grad.mul_(1.0 - (log_var / self.bound).square())

    def _decoder_terms(
        self, out: torch.Tensor, x: torch.Tensor, samples: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) per (sample, point), (L, M), and ∂log p/∂(decoder output), (L·M, outputs).

        For a per-dimension decoder variance, ∂log p/∂log σ² per row is left in
        ``self._log_var_source`` (L·M, D); otherwise that is None.
        """
        rows, data_dim = samples * batch, x.shape[1]
        grad = self._grad_out[:rows]
        x_lm = x.unsqueeze(0)
        self._log_var_source = None
        if self.likelihood == "bernoulli":
            logits = out.view(samples, batch, data_dim)
            log_lik = bernoulli_from_logits(logits).log_prob(x_lm)  # grey levels x ∈ [0, 1] too
            torch.sigmoid(out, out=grad)
            grad.view(samples, batch, data_dim).sub_(x_lm).neg_()  # x − sigmoid(l)
            return log_lik, grad
        if self.shared_log_var is None:
            mean_raw, log_var = out[:, :data_dim], bounded_log_variance(out[:, data_dim:], self.bound)
        else:
            mean_raw = out
            log_var = bounded_log_variance(self.shared_log_var.detach(), self.bound).expand(rows, data_dim)
        mean = torch.sigmoid(mean_raw) if self.sigmoid_mean else mean_raw
        log_lik = diagonal_gaussian(
            mean.reshape(samples, batch, data_dim), log_var.reshape(samples, batch, data_dim)
        ).log_prob(x_lm)
        residual = (x_lm - mean.reshape(samples, batch, data_dim)).view(rows, data_dim)
        scaled = residual * torch.exp(-log_var)  # (x − μ)/σ²
        grad_log_var = (scaled * residual).sub_(1.0).mul_(0.5)  # ½((x − μ)²/σ² − 1)
        if self.sigmoid_mean:
            scaled.mul_(mean * (1.0 - mean))
        grad[:, :data_dim].copy_(scaled)
        if self.shared_log_var is None:
            self._through_bound_(grad_log_var, log_var)
            grad[:, data_dim:].copy_(grad_log_var)
        else:
            self._log_var_source = grad_log_var
        return log_lik, grad


class FusedEngine(Engine):
    """Algorithm 1's gradient by :class:`FusedStep` (hand-derived, torch operations): on a GPU, or
    on a CPU where the native kernels cannot serve. On several processes it all-reduces the
    gradients itself, in one flat bucket, as DDP would."""

    name = "fused"
    description = "fused, torch operations"
    step_type: type[FusedStep] = FusedStep

    @classmethod
    def unsupported_reason(cls, request: EngineRequest) -> str | None:
        return unsupported_reason(request.model, request.estimator)

    def __init__(self, request: EngineRequest):
        super().__init__(request)
        self.step: FusedStep | None = None

    def _step_for(self, x: torch.Tensor) -> FusedStep:
        # Buffers are sized for the largest minibatch seen (the last one of an epoch may be smaller).
        if self.step is None or self.step.batch_size < x.shape[0]:
            self.step = self.step_type(self.model, self.request.estimator, self.request.num_samples, x.shape[0])
        return self.step

    def gradient(self, x: torch.Tensor, noise: torch.Tensor | None = None, shard: Shard | None = None) -> Gradient:
        step = self._step_for(x)
        bound_sum = step(x, noise)
        if shard is not None:
            shard.group.sum_gradients_(
                step.parameters, weight=x.shape[0] / shard.size, flat_gradient=step.flat_gradient
            )
        return Gradient(bound_sum, step.parameters, step.flat_gradient)

    def close(self) -> None:
        self.step = None
