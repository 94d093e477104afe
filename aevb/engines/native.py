"""The native engine: the fused step with the work between the matrix products in C
(:mod:`aevb.native`), on a CPU in float32, and the optimiser's update (Adagrad, Adam) applied
inside the step.

The matrix products run in torch (MKL/oneDNN); activations and their derivatives, the Bernoulli
log-likelihood and its gradient, the reparameterised latent layer, bias sums and the update run
as one native pass each. The backward pass is split: first the chain of input gradients, then —
once all of them are known, and bound every weight gradient (:meth:`NativeStep._gradients_finite`)
— the weight gradients, each followed by its layer's update while it is still in cache (the
optimisers whose arithmetic a kernel restates: :data:`NATIVE_UPDATES`). The
first layer's products go sparse on mostly-zero data (MNIST). The kernels are tested against the
torch references (``tests/test_native.py``), the step against :class:`aevb.engines.fused.FusedStep`.
"""

from __future__ import annotations

import math

import torch

from .. import native
from ..models.networks import bounded_log_variance
from ..native.bindings import ACTIVATION_CODES, Kernels, SparseRows
from ..process_group import Shard
from ..threads import one_thread
from .base import EngineRequest
from .fused import FusedEngine, FusedStep, Layer

#: Largest fraction of nonzeros in a minibatch for which the first layer's products go sparse:
#: their cost follows the nonzeros, so they win on mostly-zero data such as MNIST (13-20%
#: nonzeros); the threshold stays below the density where sparse and dense cost the same.
#: Timings in docs/performance.md.
SPARSE_DENSITY = 0.3
_FLOAT32_MAX = torch.finfo(torch.float32).max
#: A product of gradient and input magnitudes above this means values near 1e19: a diverged step.
_GUARD_LIMIT = 1e37

#: The updates the native step applies itself, by the optimiser's ``update_rule``
#: (:mod:`aevb.training.optimizers`): the :class:`aevb.native.bindings.Kernels` method, called as
#: ``kernel(parameter, gradient, *state, step, *hyper(optimizer, group))`` with the state tensors in
#: the order of the optimiser's ``kernel_lists``, and the settings it takes (the step size is the
#: optimiser's ``step_lr``: 0 in a warm-up).
NATIVE_UPDATES = {
    "adagrad": (
        "adagrad",
        lambda optimizer, group: (optimizer.step_lr(group), group["lr_decay"], group["weight_decay"], group["eps"]),
    ),
    "adam": (
        "adam",
        lambda optimizer, group: (optimizer.step_lr(group), *group["betas"], group["weight_decay"], group["eps"]),
    ),
}


def float32_total(total: float) -> torch.Tensor:
    """The native step's bound, a total summed in double on the host, as a 0-dim float32 tensor.
    A total beyond float32's range becomes ±inf, as autograd's float32 sum gives: a diverged step
    that the numeric guard skips (``torch.scalar_tensor`` alone raises on it, issue 14)."""
    if abs(total) > _FLOAT32_MAX:  # False for NaN, which stays NaN
        total = math.copysign(math.inf, total)
    return torch.scalar_tensor(total, dtype=torch.float32)


class NativeLayer(Layer):
    """A :class:`~aevb.engines.fused.Layer` whose elementwise work runs in the native kernels."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sparse_input: SparseRows | None = None
        self.input_magnitude = math.nan  # Σ|input| of the last forward

    def native_forward(
        self, inputs: torch.Tensor | SparseRows, input_magnitude: float, kernels: Kernels
    ) -> tuple[torch.Tensor, float]:
        """The layer's output and Σ|output| (the next layer's ``input_magnitude``, which the
        numeric guard uses). ``inputs`` may be the nonzeros of a mostly-zero minibatch."""
        self.input_magnitude = input_magnitude
        if isinstance(inputs, SparseRows):
            rows, self.input, self.sparse_input = inputs.size, None, inputs
            pre = self.pre[:rows]
            kernels.sparse_linear(inputs, self.weight, self.bias, pre)
        else:
            rows, self.input, self.sparse_input = inputs.shape[0], inputs, None
            pre = torch.addmm(self.bias, inputs, self.weight.t(), out=self.pre[:rows])
        if self.activation is None:
            return pre, math.nan  # a head: its output feeds no linear layer
        if self.activation.name in ACTIVATION_CODES:
            out = self.out[:rows]
            return out, kernels.activation_forward(pre, out, self.activation.name)
        out = self.activation.forward(pre, self.out[:rows])
        return out, kernels.abs_sum(out)

    def native_backward(self, grad_out: torch.Tensor, kernels: Kernels) -> float:
        """grad_out ← ∂loss/∂(pre-activation) in place and the bias gradient; returns Σ|grad_out|."""
        rows = grad_out.shape[0]
        activation = self.activation
        if activation is None or activation.name in ACTIVATION_CODES:
            return kernels.activation_backward(
                grad_out,
                self.pre[:rows],
                self.out[:rows],
                None if activation is None else activation.name,
                self.bias.grad,
            )
        activation.backward(grad_out, self.pre[:rows], self.out[:rows])
        return kernels.activation_backward(grad_out, None, None, None, self.bias.grad)

    def input_gradient(self, grad_pre: torch.Tensor) -> torch.Tensor:
        return torch.mm(grad_pre, self.weight, out=self.grad_in[: grad_pre.shape[0]])

    def weight_gradient(self, grad_pre: torch.Tensor, kernels: Kernels) -> None:
        if self.sparse_input is not None:
            kernels.sparse_weight_gradient(self.sparse_input, grad_pre, self.weight.grad)
        else:
            torch.mm(grad_pre.t(), self.input, out=self.weight.grad)


def native_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the native kernels cannot run here, or None (building them on first use)."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return "the native kernels run in float32 on a CPU"
    if native.load() is None:
        return "the native kernels are unavailable (no C compiler, a failed build, or AEVB_NATIVE=0)"
    return None


class NativeStep(FusedStep):
    """:class:`~aevb.engines.fused.FusedStep` on the native kernels; ``step(x, optimizer=optimizer)``
    also applies the update (:meth:`applies_optimizer` says when), the same arithmetic as
    ``optimizer.step()`` after the call; ``step.skipped`` then says whether a non-finite loss or
    gradient skipped it. Raises ValueError where the kernels cannot be had."""

    layer_type = NativeLayer

    def __init__(self, model, estimator: str, num_samples: int, batch_size: int):
        super().__init__(model, estimator, num_samples, batch_size)
        reason = native_unavailable_reason(self.options["device"], self.options["dtype"])
        if reason is not None:
            raise ValueError(f"no fused step with native kernels: {reason}")
        self.kernels = native.load()
        rows, latent, options = batch_size * num_samples, self.latent_dim, self.options
        self._z = torch.empty(rows, latent, **options)
        self._std = torch.empty(batch_size, latent, **options)
        self._log_var = torch.empty(batch_size, latent, **options)
        self._term = torch.empty(rows, **options)  # KL per point (B) or log p(z) − log q per sample
        self._log_lik = torch.empty(rows, **options)
        # a per-dimension decoder variance: ∂log p/∂log σ² of every row, before the rows' sum
        self._log_var_rows = (
            None if self.shared_log_var is None else torch.empty(rows, model.config.data_dim, **options)
        )
        self._sparse = SparseRows(batch_size, model.config.data_dim, torch.get_num_threads())
        self._dense_steps = 0  # steps to go before looking at x's zeros again
        self._applies_to = None

    def applies_optimizer(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``self(x, optimizer=optimizer)`` can apply the optimiser's step itself: an
        :class:`aevb.training.optimizers.Adagrad` or :class:`~aevb.training.optimizers.Adam` over
        exactly this model's parameters, in one group, whose state exists (Adam makes it at its
        first step)."""
        # A kernel restates the update's arithmetic: only an optimiser that says it applies that
        # update through torch's fused kernel (the classes of aevb.training.optimizers) qualifies.
        rule = NATIVE_UPDATES.get(getattr(optimizer, "update_rule", None))
        if rule is None or not getattr(optimizer, "direct", False):
            return False
        groups = optimizer.param_groups
        if len(groups) != 1 or groups[0]["maximize"] or isinstance(groups[0]["lr"], torch.Tensor):
            return False
        lists = optimizer.kernel_lists(0, groups[0])
        if lists is not None and self._applies_to is lists:  # checked at an earlier step
            return True
        if not (
            len(groups[0]["params"]) == len(self.parameters)
            and all(a is b for a, b in zip(groups[0]["params"], self.parameters))
        ):
            return False
        if lists is None or not all(step.dtype == torch.float32 and step.device.type == "cpu" for step in lists[-1]):
            return False
        params, _, *states, steps = lists
        # {id(parameter): (*state, step count)}, rebuilt only when the optimiser's tensors change
        self._optimizer_state = {id(p): state for p, *state in zip(params, *states, steps)}
        self._update = (getattr(self.kernels, rule[0]), rule[1])
        self._applies_to = lists
        return True

    def _step(
        self, x: torch.Tensor, noise: torch.Tensor | None, optimizer: torch.optim.Optimizer | None
    ) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu":  # data the kernels cannot take
            return super()._step(x, noise, optimizer)
        if optimizer is not None and not self.applies_optimizer(optimizer):
            raise ValueError("this fused step cannot apply that optimiser (see applies_optimizer)")
        x = x.contiguous()
        heads, eps, closed_form_kl, term_total = self._encode(x, noise)
        rows, batch, samples = self.num_samples * x.shape[0], x.shape[0], self.num_samples
        g, magnitude = self._z[:rows], self._last_magnitude
        for layer in self.decoder:
            g, magnitude = layer.native_forward(g, magnitude, self.kernels)
        bound_sum, weights, grad_out = self._bound_and_output_gradient(g, x, samples, batch, term_total)
        pending = self._input_gradients(grad_out, eps, heads, closed_form_kl, weights, batch)
        update = optimizer is not None and self._gradients_finite(
            bound_sum, [(m, layer.input_magnitude) for layer, _, m in pending]
        )
        self.skipped = optimizer is not None and not update
        self._weight_gradients(pending, optimizer if update else None)
        return bound_sum

    def _encode(self, x: torch.Tensor, noise: torch.Tensor | None):
        """Encoder forward and the latent layer: z into ``self._z``; the KL (B) or log p(z) − log q
        terms into ``self._term``, their total returned."""
        kernels = self.kernels
        batch, samples, latent = x.shape[0], self.num_samples, self.latent_dim
        rows = samples * batch
        magnitude = self._sparse_input(x)  # Σ|x|, or None for dense data
        if magnitude is None:
            magnitude, h = kernels.abs_sum(x), x
        else:
            h = self._sparse
        for layer in self.encoder:
            h, magnitude = layer.native_forward(h, magnitude, kernels)
        heads = h  # (M, 2J): μ, raw log σ²
        eps = (
            torch.empty(samples, batch, latent, dtype=x.dtype, device=x.device).normal_()
            if noise is None
            else noise.contiguous()
        )
        closed_form_kl = self.estimator == "B"
        z, std, log_var = self._z[:rows], self._std[:batch], self._log_var[:batch]
        term = self._term[:batch] if closed_form_kl else self._term[:rows]
        self._last_magnitude, term_total = kernels.latent_forward(
            heads, eps, self.bound, closed_form_kl, z, std, log_var, term
        )
        return heads, eps, closed_form_kl, term_total

    def _bound_and_output_gradient(self, g: torch.Tensor, x: torch.Tensor, samples: int, batch: int, term_total: float):
        """The bound sum, IWAE's weights (None for A and B) and ∂loss/∂(decoder output)."""
        rows, weights = samples * batch, None
        if self.likelihood == "bernoulli":
            # the loss gradient w (sigmoid − x), w = 1/(LM) for A and B; for IWAE w is known only
            # after the log-likelihoods: first 1, then each row times its weight
            scale = 1.0 if self.estimator == "IWAE" else 1.0 / rows
            log_lik_total = self.kernels.bernoulli(g, x, samples, scale, self._log_lik[:rows])
            log_lik, grad_out = self._log_lik[:rows], g
        else:
            log_lik_total = self._gaussian_terms(g, x, samples)
            log_lik, grad_out = self._log_lik[:rows], self._grad_out[:rows]
        # totals in double on the host (a CPU step: no device to wait for)
        if self.estimator == "B":
            bound_sum = float32_total(log_lik_total / samples - term_total)
        elif self.estimator == "A":
            bound_sum = float32_total((log_lik_total + term_total) / samples)
        else:
            log_w = (log_lik + self._term[:rows]).view(samples, batch)
            # torch's softmax over the samples splits the minibatch's columns among its threads, whose vector
            # and scalar code round exp differently: on one thread the weights are the same bits on any count
            with one_thread():
                bound_sum = (torch.logsumexp(log_w, dim=0) - math.log(samples)).sum()
                weights = torch.softmax(log_w, dim=0).div_(batch).view(rows)  # self-normalised, / M
        if self.likelihood == "bernoulli":
            if weights is not None:
                self.kernels.scale_rows(grad_out, weights)
        else:  # ∂log p/∂out → −w ∂log p/∂out, as in the torch path
            factor = weights.unsqueeze(-1) if weights is not None else 1.0 / rows
            grad_out.mul_(factor).neg_()
            if self._log_var_source is not None:
                self._log_var_source.mul_(factor).neg_()
                self._shared_log_var_gradient()
        return bound_sum, weights, grad_out

    def _gaussian_terms(self, out: torch.Tensor, x: torch.Tensor, samples: int) -> float:
        """:meth:`FusedStep._decoder_terms` of a Gaussian decoder in one native pass (its torch
        operations would round differently with the number of threads): ``self._log_lik`` and
        ``self._grad_out`` (and ``self._log_var_source``) as there. Returns Σ log p(x|z)."""
        rows = out.shape[0]
        shared = None if self.shared_log_var is None else self.shared_log_var.detach()
        self._log_var_source = None if shared is None else self._log_var_rows[:rows]
        return self.kernels.gaussian(
            out,
            x,
            samples,
            self.bound,
            self.sigmoid_mean,
            shared,
            self._grad_out[:rows],
            self._log_var_source,
            self._log_lik[:rows],
        )

    def _shared_log_var_gradient(self) -> None:
        # The rows' sum in row order (a native column sum), whatever the number of threads.
        self.kernels.activation_backward(self._log_var_source, None, None, None, self.shared_log_var.grad)
        self._through_bound_(self.shared_log_var.grad, bounded_log_variance(self.shared_log_var.detach(), self.bound))

    def _input_gradients(self, grad_out, eps, heads, closed_form_kl, weights, batch):
        """The backward chain of input gradients: [(layer, ∂loss/∂pre-activation, Σ|that|)]."""
        kernels, pending, grad = self.kernels, [], grad_out
        for layer in reversed(self.decoder):
            magnitude = layer.native_backward(grad, kernels)
            pending.append((layer, grad, magnitude))
            grad = layer.input_gradient(grad)
        rows = grad_out.shape[0]
        grad_heads = self._grad_heads[:batch]
        kernels.latent_backward(
            grad,
            eps,
            self._z[:rows],
            self._std[:batch],
            self._log_var[:batch],
            heads,
            self.bound,
            closed_form_kl,
            weights,
            grad_heads,
        )
        grad = grad_heads
        for index, layer in reversed(list(enumerate(self.encoder))):
            magnitude = layer.native_backward(grad, kernels)
            pending.append((layer, grad, magnitude))
            if index > 0:
                grad = layer.input_gradient(grad)
        return pending

    def _weight_gradients(self, pending, optimizer: torch.optim.Optimizer | None) -> None:
        """Every weight gradient, each followed by its layer's update when ``optimizer``."""
        kernels = self.kernels
        if optimizer is not None:
            state = self._optimizer_state  # set by applies_optimizer for these lists
            update, settings = self._update
            hyper = settings(optimizer, optimizer.param_groups[0])
        for layer, grad_pre, _ in pending:
            layer.weight_gradient(grad_pre, kernels)
            if optimizer is not None:
                for parameter in (layer.weight, layer.bias):
                    update(parameter, parameter.grad, *state[id(parameter)], *hyper)
        if optimizer is not None and self.shared_log_var is not None:
            parameter = self.shared_log_var
            update(parameter, parameter.grad, *state[id(parameter)], *hyper)

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
        if not math.isfinite(float(bound_sum)):
            return False
        for grad_magnitude, input_magnitude in layers:
            if not (grad_magnitude < _GUARD_LIMIT and grad_magnitude * input_magnitude < _GUARD_LIMIT):  # False for NaN
                return False
        return self.shared_log_var is None or bool(torch.isfinite(self.shared_log_var.grad).all())


class NativeEngine(FusedEngine):
    """The fused engine on the native kernels (a CPU, float32), applying the update inside the step
    on one process."""

    name = "native"
    description = "fused, native kernels"
    thread_count_invariant = True  # the kernels split only independent rows or columns (kernels.c)
    step_type = NativeStep

    @classmethod
    def unsupported_reason(cls, request: EngineRequest) -> str | None:
        return FusedEngine.unsupported_reason(request) or native_unavailable_reason(request.device, request.dtype)

    def applies_optimizer(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, shard: Shard | None = None) -> bool:
        return shard is None and self._step_for(x).applies_optimizer(optimizer)

    def gradient_and_update(
        self, x: torch.Tensor, noise: torch.Tensor | None, optimizer: torch.optim.Optimizer
    ) -> torch.Tensor:
        step = self._step_for(x)
        bound_sum = step(x, noise, optimizer=optimizer)
        return torch.full_like(bound_sum, math.nan) if step.skipped else bound_sum
