"""A fused training step for MLP VAEs: the SGVB estimators' forward pass and their hand-derived
gradients, written into preallocated buffers (the fast CPU path of Algorithm 1).

Why. The paper's MNIST model does eleven matrix products per step; everything else (autograd's
graph, about sixty small elementwise kernels, a fresh allocation for every activation and
gradient, the optimiser's bookkeeping) adds much to that on a CPU (the measured share is in
docs/performance.md). Here the same products write into buffers that live for the whole run
(``torch.addmm(..., out=)``), gradients go straight into ``param.grad``, and the elementwise work
is a handful of in-place kernels. The result is the same gradient as ``loss.backward()`` on the
estimators of :mod:`aevb.estimators`, to rounding (the tests check this in float64 for every
supported configuration), with the same draws of ε from the global generator, so either engine
continues the other's run.

Derivation (per minibatch of M points, L samples, loss = −(1/M) Σ_i 𝓛̃ᵢ, weights wₗᵢ):

* B (eq. 7): wₗᵢ = 1/(LM); ∂loss/∂μ = μ/M and ∂loss/∂log σ² = ½(σ² − 1)/M from the closed-form
  KL (App. B), plus the reparameterised path z = μ + σε through the decoder.
* A (eq. 6): wₗᵢ = 1/(LM); the prior adds ∂/∂z log p(z) = −z; −log q(z|x) along the path
  z = μ + σε has total derivative 0 in μ and +½ in log σ² (its ε-terms cancel), i.e. the entropy.
* IWAE (k = L): as A with wₗᵢ = softmaxₗ(log wₗᵢ)/M, the self-normalised importance weights.
* Decoder: Bernoulli ∂ log p/∂logits = x − sigmoid(logits); Gaussian ∂/∂μ = (x − μ)/σ²,
  ∂/∂log σ² = ½((x − μ)²/σ² − 1), times μ(1 − μ) through a sigmoid mean (§5, Frey Face).

Supported: :class:`aevb.model.VAE` exactly (any depth and width, every activation of
``model.ACTIVATIONS``, both decoders and both decoder-variance modes) with estimators A, B and
IWAE and any L. Anything else (subclasses, other families) uses autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .optimizers import Adagrad
from .model import ACTIVATIONS, MLP, VAE, BernoulliDecoder, GaussianDecoder, GaussianEncoder, bounded_log_variance

LOG_2PI = math.log(2.0 * math.pi)
FUSED_ESTIMATORS = ("A", "B", "IWAE")
#: Largest fraction of nonzeros in a minibatch for which the first layer's products go sparse
#: (aevb.native): their cost follows the nonzeros, so they win on mostly-zero data such as MNIST
#: (13-20% nonzeros); the threshold stays below the density where sparse and dense cost the same.
#: Timings in docs/performance.md.
SPARSE_DENSITY = 0.3
_FLOAT32_MAX = torch.finfo(torch.float32).max


# Activations: forward into a buffer, and the derivative from pre-activation a and output h,
# multiplied into the incoming gradient in place. Keyed like model.ACTIVATIONS.
def _tanh(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    # tanh(a) = 2 sigmoid(2a) − 1: torch's CPU sigmoid kernel is faster than its tanh kernel
    # (docs/performance.md); the absolute difference is at float rounding (~1e-7).
    torch.mul(a, 2.0, out=out)
    return torch.sigmoid(out, out=out).mul_(2.0).sub_(1.0)


def _tanh_grad(grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor) -> None:
    grad.addcmul_(grad, h * h, value=-1.0)   # grad · (1 − h²)


def _relu(a, out):
    return torch.clamp(a, min=0.0, out=out)


def _relu_grad(grad, a, h):
    grad.mul_(a > 0)


def _sigmoid(a, out):
    return torch.sigmoid(a, out=out)


def _sigmoid_grad(grad, a, h):
    grad.mul_(h * (1.0 - h))


def _softplus(a, out):
    out.copy_(F.softplus(a))
    return out


def _softplus_grad(grad, a, h):
    grad.mul_(torch.sigmoid(a))


def _elu(a, out):
    out.copy_(F.elu(a))
    return out


def _elu_grad(grad, a, h):
    grad.mul_(torch.where(a > 0, 1.0, h + 1.0))   # d/da (eᵃ − 1) = h + 1 below zero


@dataclass(frozen=True)
class _Activation:
    name: str
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


FUSED_ACTIVATIONS: dict[str, _Activation] = {
    "tanh": _Activation("tanh", _tanh, _tanh_grad),
    "relu": _Activation("relu", _relu, _relu_grad),
    "sigmoid": _Activation("sigmoid", _sigmoid, _sigmoid_grad),
    "softplus": _Activation("softplus", _softplus, _softplus_grad),
    "elu": _Activation("elu", _elu, _elu_grad),
}
assert set(FUSED_ACTIVATIONS) == set(ACTIVATIONS), "every model activation needs a fused derivative"


def unsupported_reason(model: nn.Module, estimator: str) -> str | None:
    """Why :class:`FusedStep` cannot train this model with this estimator, or None if it can."""
    config = getattr(model, "config", None)
    if getattr(config, "num_classes", None) is not None:
        return "conditional models (class labels as inputs) train with autograd"
    if getattr(config, "architecture", "mlp") != "mlp":
        return f"{config.architecture} networks train with autograd"
    if getattr(config, "decoder_posterior", "point") != "point":
        return "full variational Bayes (a posterior over the decoder's parameters, App. F) has no fused gradient"
    if type(model) is not VAE:
        return f"model is a {type(model).__name__}, not an aevb VAE"
    families = (getattr(model.config, "posterior", "gaussian"), getattr(model.config, "prior", "gaussian"))
    if families != ("gaussian", "gaussian"):
        return (f"posterior {families[0]} with prior {families[1]}: the fused gradients are derived for the "
                "Gaussian posterior and N(0, I) prior only")
    if type(model.encoder) is not GaussianEncoder or type(model.decoder) not in (BernoulliDecoder, GaussianDecoder):
        return "encoder or decoder replaced"
    if estimator.upper() not in FUSED_ESTIMATORS:
        return f"estimator {estimator} has no fused gradient"
    for net in (model.encoder.net, model.decoder.net):
        if type(net) is not MLP or any(not isinstance(m, (nn.Linear, *ACTIVATIONS.values())) for m in net.hidden):
            return "network is not a plain MLP"
    return None


class _Layer:
    """One linear layer (+ activation) with its forward and backward buffers for up to R rows."""

    def __init__(self, linear: nn.Linear, activation: _Activation | None, rows: int):
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = activation
        options = {"dtype": self.weight.dtype, "device": self.weight.device}
        out_features, in_features = self.weight.shape
        self.pre = torch.empty(rows, out_features, **options)
        self.out = torch.empty(rows, out_features, **options) if activation is not None else self.pre
        self.grad_in = torch.empty(rows, in_features, **options)
        self.input: torch.Tensor | None = None
        self.sparse_input: native.SparseRows | None = None
        self.input_magnitude = math.nan                  # Σ|input| of the last native forward

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

    # The native path (aevb.native) splits the backward: first the chain of input gradients (the
    # activation's derivative and the bias gradient in one kernel), and only once all of them are
    # known — and bound every weight gradient — the weight gradients, each followed by its update.

    def native_forward(self, inputs: torch.Tensor | native.SparseRows, input_magnitude: float,
                       kernels: native.Kernels) -> tuple[torch.Tensor, float]:
        """The layer's output and Σ|output| (the next layer's ``input_magnitude``, which the
        numeric guard uses). ``inputs`` may be the nonzeros of a mostly-zero minibatch
        (:class:`aevb.native.SparseRows`)."""
        self.input_magnitude = input_magnitude
        if isinstance(inputs, native.SparseRows):
            rows, self.input, self.sparse_input = inputs.size, None, inputs
            pre = self.pre[:rows]
            kernels.sparse_linear(inputs, self.weight, self.bias, pre)
        else:
            rows, self.input, self.sparse_input = inputs.shape[0], inputs, None
            pre = torch.addmm(self.bias, inputs, self.weight.t(), out=self.pre[:rows])
        if self.activation is None:
            return pre, math.nan   # a head: its output feeds no linear layer
        if self.activation.name in native.ACTIVATION_CODES:
            out = self.out[:rows]
            return out, kernels.activation_forward(pre, out, self.activation.name)
        out = self.activation.forward(pre, self.out[:rows])
        return out, kernels.abs_sum(out)

    def native_backward(self, grad_out: torch.Tensor, kernels: native.Kernels) -> float:
        """grad_out ← ∂loss/∂(pre-activation) in place and the bias gradient; returns Σ|grad_out|."""
        rows = grad_out.shape[0]
        activation = self.activation
        if activation is None or activation.name in native.ACTIVATION_CODES:
            return kernels.activation_backward(grad_out, self.pre[:rows], self.out[:rows],
                                               None if activation is None else activation.name, self.bias.grad)
        activation.backward(grad_out, self.pre[:rows], self.out[:rows])
        return kernels.activation_backward(grad_out, None, None, None, self.bias.grad)

    def input_gradient(self, grad_pre: torch.Tensor) -> torch.Tensor:
        return torch.mm(grad_pre, self.weight, out=self.grad_in[:grad_pre.shape[0]])

    def weight_gradient(self, grad_pre: torch.Tensor, kernels: native.Kernels) -> None:
        if self.sparse_input is not None:
            kernels.sparse_weight_gradient(self.sparse_input, grad_pre, self.weight.grad)
        else:
            torch.mm(grad_pre.t(), self.input, out=self.weight.grad)


def _float32_total(total: float) -> torch.Tensor:
    """The native step's bound, a total summed in double on the host, as a 0-dim float32 tensor.
    A total beyond float32's range becomes ±inf, as autograd's float32 sum gives: a diverged step
    that the numeric guard skips (``torch.scalar_tensor`` alone raises on it, issue 14)."""
    if abs(total) > _FLOAT32_MAX:   # False for NaN, which stays NaN
        total = math.copysign(math.inf, total)
    return torch.scalar_tensor(total, dtype=torch.float32)


def _hidden_linears(net: MLP) -> list[nn.Linear]:
    return [module for module in net.hidden if isinstance(module, nn.Linear)]


def _layers(net: MLP, activation: str, rows: int) -> list[_Layer]:
    act = FUSED_ACTIVATIONS[activation]
    return [_Layer(linear, act, rows) for linear in _hidden_linears(net)] + [_Layer(net.heads, None, rows)]


class FusedStep:
    """Computes the minibatch SGVB loss's gradient into ``param.grad`` for every parameter.

    Args:
        model: an :class:`aevb.model.VAE` (see :func:`unsupported_reason`).
        estimator: "A", "B" or "IWAE" (§2.3; IWAE with k = L).
        num_samples: L.
        batch_size: the largest minibatch M it will see (buffers are sized for it).

    Calling it on x of shape (M, D) returns the sum over the minibatch of the per-datapoint bound
    estimates (0-dim tensor, nats), exactly like :meth:`aevb.training.AEVB.step` before the
    optimiser step. Gradients are of the loss −(1/M) Σ 𝓛̃ᵢ, as ``loss.backward()`` would leave them.

    With the native kernels (:mod:`aevb.native`: float32 on a CPU) it can also apply the
    optimiser's step: ``step(x, optimizer=adagrad)`` updates each layer right after its weight
    gradient, the same arithmetic as ``adagrad.step()`` after the call, in one pass less over the
    gradients; ``step.skipped`` then says whether a non-finite loss or gradient skipped the update
    (:meth:`applies_optimizer` says when this is possible).
    """

    def __init__(self, model: VAE, estimator: str, num_samples: int, batch_size: int,
                 use_native: bool | None = None):
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
        self.encoder = _layers(model.encoder.net, config.activation, batch_size)
        self.decoder = _layers(model.decoder.net, config.activation, rows)
        self.parameters = list(model.parameters())
        self._ensure_gradient_buffers()
        options = {"dtype": self.encoder[0].weight.dtype, "device": self.encoder[0].weight.device}
        self._grad_out = torch.empty(rows, self.decoder[-1].weight.shape[0], **options)
        self._log_var_source: torch.Tensor | None = None
        self._grad_heads = torch.empty(batch_size, 2 * config.latent_dim, **options)
        # The native kernels (aevb.native) do the work between the matrix products on a CPU in
        # float32; ``use_native`` None: whenever they can be built, False: never, True: required.
        self.kernels: native.Kernels | None = None
        if use_native is not False and options["device"].type == "cpu" and options["dtype"] == torch.float32:
            self.kernels = native.load()
        if use_native and self.kernels is None:
            raise ValueError("no fused step with native kernels: they need float32 on a CPU and a C compiler "
                             "(and AEVB_NATIVE not set to 0)")
        if self.kernels is not None:
            latent = config.latent_dim
            self._z = torch.empty(rows, latent, **options)
            self._std = torch.empty(batch_size, latent, **options)
            self._log_var = torch.empty(batch_size, latent, **options)
            self._term = torch.empty(rows, **options)            # KL per point (B) or log p(z) − log q per sample
            self._log_lik = torch.empty(rows, **options)
            self._sparse = native.SparseRows(batch_size, config.data_dim, torch.get_num_threads())
            self._dense_steps = 0                                # steps to go before looking at x's zeros again

    def _ensure_gradient_buffers(self) -> None:
        # The gradients are written into param.grad, views of one flat buffer (so that the numeric
        # guard checks them in one reduction); something else (zero_grad(set_to_none=True), a
        # user) may have dropped or replaced them since the last step.
        flat = getattr(self, "flat_gradient", None)
        if flat is not None and all(p.grad is view for p, view in zip(self.parameters, self._gradient_views)):
            return
        first = self.parameters[0]
        self.flat_gradient = torch.zeros(sum(p.numel() for p in self.parameters), dtype=first.dtype,
                                         device=first.device)
        self._gradient_views = [view.view_as(p) for p, view in
                                zip(self.parameters, self.flat_gradient.split([p.numel() for p in self.parameters]))]
        for parameter, view in zip(self.parameters, self._gradient_views):
            if parameter.grad is not None:
                view.copy_(parameter.grad)
            parameter.grad = view

    def __call__(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                 optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
        """x: (M, D); ``noise``: optional ε (L, M, J), else drawn here. Returns Σ_i 𝓛̃ᵢ (0-dim)."""
        # (no autograd here: set directly, cheaper than the no_grad context manager; docs/performance.md)
        grad_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            return self._step(x, noise, optimizer)
        finally:
            torch.set_grad_enabled(grad_enabled)

    def _step(self, x: torch.Tensor, noise: torch.Tensor | None, optimizer: torch.optim.Optimizer | None):
        self._ensure_gradient_buffers()
        native_path = self.kernels is not None and x.dtype == torch.float32 and x.device.type == "cpu"
        if optimizer is not None and not (native_path and self.applies_optimizer(optimizer)):
            raise ValueError("this fused step cannot apply that optimiser (see applies_optimizer)")
        self.skipped = False
        if native_path:
            return self._native_step(x.contiguous(), noise, optimizer)
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
        # log p(x|z): per (sample, point), (L, M), for IWAE's weights; A and B need only its total.
        log_lik, grad_out = self._decoder_terms(g, x, samples, batch, per_point=self.estimator == "IWAE")

        z_lm = z.view(samples, batch, latent)
        if self.estimator == "B":
            kl = 0.5 * (mean.square() + std.square() - log_var - 1.0).sum(dim=1)   # App. B, (M,)
            bound_sum = log_lik.sum() / samples - kl.sum()
            weights = None
            weight = 1.0 / (samples * batch)
        else:
            log_prior = -0.5 * (z_lm.square().sum(dim=2) + latent * LOG_2PI)
            log_q = -0.5 * (eps.square().sum(dim=2) + log_var.sum(dim=1) + latent * LOG_2PI)
            if self.estimator == "A":
                bound_sum = (log_lik + log_prior.sum() - log_q.sum()) / samples
                weights = None
                weight = 1.0 / (samples * batch)
            else:
                log_w = log_lik + log_prior - log_q                               # (L, M)
                bound_sum = (torch.logsumexp(log_w, dim=0) - math.log(samples)).sum()
                weights = torch.softmax(log_w, dim=0).div_(batch)               # (L, M)

        # Backward. ∂loss/∂(decoder output) = −w · ∂log p/∂out.
        def scale_(tensor: torch.Tensor) -> torch.Tensor:   # tensor ← −w · tensor, per (sample, point)
            if weights is None:
                return tensor.mul_(-weight)
            return tensor.view(samples, batch, -1).mul_(weights.unsqueeze(-1)).neg_()

        scale_(grad_out)
        if self._log_var_source is not None:   # a per-dimension decoder variance: sum over rows
            scale_(self._log_var_source)
            torch.sum(self._log_var_source, dim=0, out=self.shared_log_var.grad)
            self._through_bound_(self.shared_log_var.grad, bounded_log_variance(self.shared_log_var.detach(), self.bound))
        grad = grad_out
        for layer in reversed(self.decoder):
            grad = layer.backward(grad)
        grad_z = grad.view(samples, batch, latent)                                # ∂loss/∂z
        if self.estimator != "B":   # log p(z) = −½‖z‖²: ∂(−w log p(z))/∂z = w z
            if weights is None:
                grad_z.add_(z_lm, alpha=weight)
            else:
                grad_z.addcmul_(z_lm, weights.unsqueeze(-1))

        grad_heads = self._grad_heads[:batch]
        grad_mean, grad_log_var = grad_heads[:, :latent], grad_heads[:, latent:]
        torch.sum(grad_z, dim=0, out=grad_mean)
        torch.sum(grad_z * eps, dim=0, out=grad_log_var)
        grad_log_var.mul_(0.5 * std)                                              # dz/dlog σ² = ½σε
        if self.estimator == "B":
            grad_mean.add_(mean, alpha=1.0 / batch)
            grad_log_var.add_(std.square().sub_(1.0), alpha=0.5 / batch)
        else:                       # entropy of q along the path: −½ per dimension per point
            grad_log_var.sub_(0.5 / batch)
        self._through_bound_(grad_log_var, log_var)
        grad = grad_heads
        for index, layer in reversed(list(enumerate(self.encoder))):
            grad = layer.backward(grad, need_input_grad=index > 0)
        return bound_sum.detach()

    def applies_optimizer(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``self(x, optimizer=optimizer)`` can apply the optimiser's step itself: native
        kernels, and an :class:`aevb.optimizers.Adagrad` over exactly this model's parameters."""
        if self.kernels is None or not isinstance(optimizer, Adagrad) or not optimizer.direct:
            return False
        groups = optimizer.param_groups
        if len(groups) != 1 or groups[0]["maximize"] or isinstance(groups[0]["lr"], torch.Tensor):
            return False
        lists = optimizer.kernel_lists(0, groups[0])
        if lists is not None and getattr(self, "_applies_to", None) is lists:   # checked at an earlier step
            return True
        if not (len(groups[0]["params"]) == len(self.parameters)
                and all(a is b for a, b in zip(groups[0]["params"], self.parameters))):
            return False
        if lists is None or not all(step.dtype == torch.float32 and step.device.type == "cpu" for step in lists[3]):
            return False
        params, _, sums, steps = lists
        # {id(parameter): (Adagrad sum, step count)}, rebuilt only when the optimiser's tensors change
        self._adagrad_state = {id(p): (s, t) for p, s, t in zip(params, sums, steps)}
        self._applies_to = lists
        return True

    def _native_step(self, x: torch.Tensor, noise: torch.Tensor | None,
                     optimizer: Adagrad | None) -> torch.Tensor:
        """The same step with the work between the matrix products in :mod:`aevb.native`; with an
        ``optimizer``, also its update, each layer's right after its weight gradient (while that
        is still in cache) — unless the loss or a gradient is not finite, which is known before
        the first weight gradient (see :meth:`_gradients_finite`)."""
        kernels = self.kernels
        batch, samples, latent = x.shape[0], self.num_samples, self.latent_dim
        rows = samples * batch
        magnitude = self._sparse_input(x)                      # Σ|x|, or None for dense data
        if magnitude is None:
            magnitude, h = kernels.abs_sum(x), x
        else:
            h = self._sparse
        for layer in self.encoder:
            h, magnitude = layer.native_forward(h, magnitude, kernels)
        heads = h                                               # (M, 2J): μ, raw log σ²
        eps = torch.empty(samples, batch, latent, dtype=x.dtype, device=x.device).normal_() if noise is None \
            else noise.contiguous()
        closed_form_kl = self.estimator == "B"
        z, std, log_var = self._z[:rows], self._std[:batch], self._log_var[:batch]
        term = self._term[:batch] if closed_form_kl else self._term[:rows]
        magnitude, term_total = kernels.latent_forward(heads, eps, self.bound, closed_form_kl, z, std, log_var, term)
        g = z
        for layer in self.decoder:
            g, magnitude = layer.native_forward(g, magnitude, kernels)

        weights = None
        if self.likelihood == "bernoulli":
            # the loss gradient w (sigmoid − x), w = 1/(LM) for A and B; for IWAE w is known only
            # after the log-likelihoods: first 1, then each row times its weight
            scale = 1.0 if self.estimator == "IWAE" else 1.0 / rows
            log_lik_total = kernels.bernoulli(g, x, samples, scale, self._log_lik[:rows])
            log_lik, grad_out = self._log_lik[:rows], g
        else:
            log_lik, grad_out = self._decoder_terms(g, x, samples, batch, per_point=True)
            log_lik = log_lik.reshape(rows)
            log_lik_total = log_lik.sum().item()
        # totals in double on the host (a CPU step: no device to wait for)
        if self.estimator == "B":
            bound_sum = _float32_total(log_lik_total / samples - term_total)
        elif self.estimator == "A":
            bound_sum = _float32_total((log_lik_total + term_total) / samples)
        else:
            log_w = (log_lik + term).view(samples, batch)
            bound_sum = (torch.logsumexp(log_w, dim=0) - math.log(samples)).sum()
            weights = torch.softmax(log_w, dim=0).div_(batch).view(rows)          # self-normalised, / M
        if self.likelihood == "bernoulli":
            if weights is not None:
                kernels.scale_rows(grad_out, weights)
        else:   # ∂log p/∂out → −w ∂log p/∂out, as in the torch path
            factor = weights.unsqueeze(-1) if weights is not None else 1.0 / rows
            grad_out.mul_(factor).neg_()
            if self._log_var_source is not None:
                self._log_var_source.mul_(factor).neg_()
                torch.sum(self._log_var_source, dim=0, out=self.shared_log_var.grad)
                self._through_bound_(self.shared_log_var.grad,
                                     bounded_log_variance(self.shared_log_var.detach(), self.bound))

        # Backward, first the chain of input gradients: (layer, ∂loss/∂pre-activation, Σ|that|).
        pending = []
        grad = grad_out
        for layer in reversed(self.decoder):
            magnitude = layer.native_backward(grad, kernels)
            pending.append((layer, grad, magnitude))
            grad = layer.input_gradient(grad)
        grad_heads = self._grad_heads[:batch]
        kernels.latent_backward(grad, eps, z, std, log_var, heads, self.bound, closed_form_kl, weights, grad_heads)
        grad = grad_heads
        for index, layer in reversed(list(enumerate(self.encoder))):
            magnitude = layer.native_backward(grad, kernels)
            pending.append((layer, grad, magnitude))
            if index > 0:
                grad = layer.input_gradient(grad)

        update = optimizer is not None and self._gradients_finite(
            bound_sum, [(m, layer.input_magnitude) for layer, _, m in pending])
        self.skipped = optimizer is not None and not update
        if update:
            group = optimizer.param_groups[0]
            state = self._adagrad_state                        # set by applies_optimizer for these lists
            hyper = (group["lr"], group["lr_decay"], group["weight_decay"], group["eps"])
        for layer, grad_pre, _ in pending:
            layer.weight_gradient(grad_pre, kernels)
            if update:
                for parameter in (layer.weight, layer.bias):
                    kernels.adagrad(parameter, parameter.grad, *state[id(parameter)], *hyper)
        if update and self.shared_log_var is not None:
            parameter = self.shared_log_var
            kernels.adagrad(parameter, parameter.grad, *state[id(parameter)], *hyper)
        return bound_sum

    def _sparse_input(self, x: torch.Tensor) -> float | None:
        """Collects x's nonzeros for the first layer's sparse products when x is mostly zeros
        (MNIST), returning Σ|x|; None for dense data, which is looked at again every 100 steps."""
        if self._dense_steps > 0:
            self._dense_steps -= 1
            return None
        magnitude = self.kernels.sparse_rows(x, self._sparse)
        if self._sparse.density() <= SPARSE_DENSITY:
            return magnitude
        self._dense_steps = 100
        return None

    def _gradients_finite(self, bound_sum: torch.Tensor, layers: list[tuple[float, float]]) -> bool:
        """Whether the loss and every gradient are finite, before any weight gradient is computed.

        A weight gradient Gᵀ·X (G the layer's ∂loss/∂pre-activation, X its input) has entries
        |Σ_r G_ri X_rj| ≤ Σ|G| · Σ|X|; the bias gradient is bounded by Σ|G|. Both sums are NaN or
        infinite when an element is. So when every such product stays below float32's largest
        number (with a margin for rounding), no gradient can be NaN or infinite; a product above it
        means values near 1e19, i.e. a diverged run, and the step is skipped as for a non-finite one.
        """
        limit = 1e37
        if not math.isfinite(float(bound_sum)):
            return False
        for grad_magnitude, input_magnitude in layers:
            if not (grad_magnitude < limit and grad_magnitude * input_magnitude < limit):   # False for NaN
                return False
        return self.shared_log_var is None or bool(torch.isfinite(self.shared_log_var.grad).all())

    def _through_bound_(self, grad: torch.Tensor, log_var: torch.Tensor) -> None:
        """∂/∂raw = ∂/∂log σ² · (1 − (log σ² / B)²) under log σ² = B·tanh(raw/B), in place."""
        if self.bound is not None:
            grad.mul_(1.0 - (log_var / self.bound).square())

    def _decoder_terms(self, out: torch.Tensor, x: torch.Tensor, samples: int, batch: int,
                       per_point: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) per (sample, point), (L, M) — or only its total, 0-dim, unless ``per_point``
        — and ∂log p/∂(decoder output), (L·M, outputs).

        For a per-dimension decoder variance, ∂log p/∂log σ² per row is left in
        ``self._log_var_source`` (L·M, D); otherwise that is None.
        """
        rows, data_dim = samples * batch, x.shape[1]
        grad = self._grad_out[:rows]
        x_lm = x.unsqueeze(0)
        self._log_var_source = None
        if self.likelihood == "bernoulli":
            # log p = Σ_d x·l − softplus(l); ∂/∂l = x − sigmoid(l). Grey levels x ∈ [0, 1] too.
            logits = out.view(samples, batch, data_dim)
            if per_point:
                log_lik = (logits * x_lm).sum(dim=2) - F.softplus(logits).sum(dim=2)
            else:   # Σ x·l as matrix-vector products: no (L, M, D) temporary
                log_lik = torch.mv(out.view(samples, -1), x.reshape(-1)).sum() - F.softplus(out).sum()
            torch.sigmoid(out, out=grad)
            grad.view(samples, batch, data_dim).sub_(x_lm).neg_()
            return log_lik, grad
        if self.shared_log_var is None:
            mean_raw, log_var = out[:, :data_dim], bounded_log_variance(out[:, data_dim:], self.bound)
        else:
            mean_raw = out
            log_var = bounded_log_variance(self.shared_log_var.detach(), self.bound).expand(rows, data_dim)
        mean = torch.sigmoid(mean_raw) if self.sigmoid_mean else mean_raw
        residual = (x_lm - mean.reshape(samples, batch, data_dim)).view(rows, data_dim)
        scaled = residual * torch.exp(-log_var)                                  # (x − μ)/σ²
        squared = scaled * residual                                              # (x − μ)²/σ²
        log_lik = -0.5 * (LOG_2PI * data_dim + log_var.sum(dim=1) + squared.sum(dim=1))
        log_lik = log_lik.view(samples, batch) if per_point else log_lik.sum()
        grad_log_var = squared.sub_(1.0).mul_(0.5)                               # ½((x − μ)²/σ² − 1)
        if self.sigmoid_mean:
            scaled.mul_(mean * (1.0 - mean))
        grad[:, :data_dim].copy_(scaled)
        if self.shared_log_var is None:
            self._through_bound_(grad_log_var, log_var)
            grad[:, data_dim:].copy_(grad_log_var)
        else:
            self._log_var_source = grad_log_var
        return log_lik, grad


def fast_decoder_log_prob(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """log p(x|z) for evaluation (no gradients) of an :class:`aevb.model.VAE`, or None when this
    fast path does not apply (gradients wanted, or not a plain MLP VAE).

    z: (..., M, J) with x: (M, D) → (..., M) nats; the same value as
    ``model.decode(z).log_prob(x)`` to float rounding, in fewer passes over the (…·M, D) output:
    tanh through the sigmoid kernel, the Bernoulli term as Σ_d x·l − softplus(l) with the first
    sum a batched matrix-vector product.
    """
    if torch.is_grad_enabled() or unsupported_reason(model, "B") is not None:
        return None
    return _decoder_log_prob_no_grad(model, z, x)


class _Scratch:
    """Reusable output buffers for evaluation chunks of one shape: importance sampling decodes
    thousands of equal chunks, and fresh multi-megabyte tensors cost a page fault per 4 KiB.
    One per process, not for concurrent use from several threads."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < math.prod(shape):
            buffer = torch.empty(math.prod(shape), dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[: math.prod(shape)].view(shape)


_SCRATCH = _Scratch()


@torch.no_grad()
def _decoder_log_prob_no_grad(model: VAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    config = model.config
    net = model.decoder.net
    activation = FUSED_ACTIVATIONS[config.activation]
    batch_shape = z.shape[:-1]
    h = z.reshape(-1, z.shape[-1])
    rows = h.shape[0]
    kernels = native.load() if h.dtype == torch.float32 and h.device.type == "cpu" and x.dtype == torch.float32 \
        else None
    for index, layer in enumerate(_hidden_linears(net)):
        buffer = _SCRATCH.get(f"hidden{index % 2}", (rows, layer.weight.shape[0]), h)
        pre = torch.addmm(layer.bias, h, layer.weight.t(), out=buffer)
        if kernels is not None and activation.name in native.ACTIVATION_CODES:
            kernels.activation_forward(pre, buffer, activation.name)
            h = buffer
        else:
            h = activation.forward(pre, buffer)
    out = torch.addmm(net.heads.bias, h, net.heads.weight.t(),
                      out=_SCRATCH.get("out", (rows, net.heads.weight.shape[0]), h))
    points, data_dim = x.shape[-2], x.shape[-1]
    if config.likelihood == "bernoulli" and kernels is not None and x.dim() == 2 and rows % points == 0:
        log_lik = torch.empty(rows, dtype=h.dtype, device=h.device)
        return kernels.bernoulli_log_lik(out, x.contiguous(), rows // points, log_lik).view(batch_shape)
    out = out.view(-1, points, out.shape[-1])                     # (S, M, outputs)
    if config.likelihood == "bernoulli":
        dot = torch.einsum("smd,md->sm", out, x)
        return (dot - _softplus_(out).sum(dim=-1)).view(batch_shape)
    bound = config.log_variance_bound
    if model.decoder.log_var is None:
        mean, log_var = out[..., :data_dim], bounded_log_variance(out[..., data_dim:], bound)
    else:
        mean, log_var = out, bounded_log_variance(model.decoder.log_var, bound).expand_as(out)
    if config.sigmoid_mean:
        mean = torch.sigmoid(mean)
    squared = (x - mean).square_().mul_(torch.exp(-log_var))
    return (-0.5 * (LOG_2PI * data_dim + log_var.sum(dim=-1) + squared.sum(dim=-1))).view(batch_shape)


def _softplus_(tensor: torch.Tensor) -> torch.Tensor:
    """softplus in place (F.softplus has no in-place form; its out= variant aliases safely)."""
    try:
        return torch._C._nn.softplus(tensor, 1.0, 20.0, out=tensor)
    except (AttributeError, RuntimeError, TypeError):
        return F.softplus(tensor)


def decoder_log_prob(model: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z), (L, M) for z (L, M, J) and x (M, D), nats: ``model.decode(z).log_prob(x)``, or
    the same number by :func:`fast_decoder_log_prob` when nothing needs its gradient. A model whose
    datapoints hold more than x (a conditional VAE's labels) computes it itself: ``model.decoder_log_prob``."""
    own = getattr(model, "decoder_log_prob", None)
    if own is not None:
        return own(z, x)
    fast = fast_decoder_log_prob(model, z, x)
    return model.decode(z).log_prob(x) if fast is None else fast
