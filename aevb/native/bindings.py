"""Typed Python entry points of the compiled kernels (``kernels.c``): :class:`Kernels` binds each
C function with its argument types and passes tensors by their data pointers; :class:`SparseRows`
holds the buffers of the sparse products. :mod:`aevb.native` builds and loads the library.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

#: Elements per vector of torch's fused Adam on a CPU (torch 2.13, measured): it runs the first
#: n − n % width elements as vectors and the rest as scalars, whose roundings differ;
#: :meth:`Kernels.adam` follows it to keep to its arithmetic.
TORCH_ADAM_VECTOR_WIDTH = 8
#: Activation codes of kernels.c, by the names of :data:`aevb.models.activations.ACTIVATIONS`.
ACTIVATION_CODES = {"tanh": 1, "relu": 2, "sigmoid": 3, "softplus": 4}
_IDENTITY = 0

_f32 = ctypes.c_float
_i64 = ctypes.c_int64
_ptr = ctypes.c_void_p


def _pointer(tensor: torch.Tensor | None):
    return None if tensor is None else tensor.data_ptr()


class SparseRows:
    """Buffers for the nonzeros of up to ``max_rows`` rows of ``dim`` columns (row r's from
    r·stride, stride = dim + 16 for the vector stores), and per-thread tiles for the sparse
    products (``threads`` of them: a later ``torch.set_num_threads`` above that uses no more)."""

    TILE = 64  # SPARSE_BLOCK in kernels.c

    def __init__(self, max_rows: int, dim: int, threads: int):
        self.dim, self.stride = dim, dim + 16
        self.index = torch.empty(max_rows, self.stride, dtype=torch.int32)
        self.value = torch.empty(max_rows, self.stride, dtype=torch.float32)
        self.count = torch.zeros(max_rows, dtype=torch.int64)
        self.nonzeros = ctypes.c_int64(0)
        self.scratch_threads = max(1, threads)
        self.scratch = torch.empty(self.scratch_threads * dim * self.TILE, dtype=torch.float32)
        self.size = 0

    def density(self) -> float:
        """Fraction of nonzeros among the rows collected last."""
        return self.nonzeros.value / max(1, self.size * self.dim)


class Kernels:
    """Typed entry points of the compiled library. Every tensor is float32, on the CPU and
    contiguous (the callers in :mod:`aevb.engines.native` guarantee it); shapes are as documented there."""

    def __init__(self, path: Path):
        self.path = path
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:  # not a library, or not one for this machine
            raise RuntimeError(f"{path} cannot be loaded: {str(error).replace(f'{path}: ', '')}") from None

        def function(name, argtypes, restype=None):
            try:
                entry = getattr(library, name)
            except AttributeError:  # another library under our name
                raise RuntimeError(
                    f"{path} is not a build of aevb's kernels, it lacks {name}; delete it to rebuild"
                ) from None
            entry.argtypes, entry.restype = argtypes, restype
            return entry

        _int, _double = ctypes.c_int, ctypes.c_double
        self._forward = function("aevb_activation_forward", [_ptr, _ptr, _i64, _int], _double)
        self._backward = function("aevb_activation_backward", [_ptr, _ptr, _ptr, _i64, _i64, _int, _ptr], _double)
        self._bernoulli = function("aevb_bernoulli", [_ptr, _ptr, _i64, _i64, _i64, _f32, _ptr], _double)
        self._bernoulli_log_lik = function("aevb_bernoulli_log_lik", [_ptr, _ptr, _ptr, _i64, _i64, _i64, _ptr])
        self._gaussian = function(
            "aevb_gaussian", [_ptr, _ptr, _i64, _i64, _i64, _f32, _int, _ptr, _ptr, _ptr, _ptr], _double
        )
        self._bias_activation = function("aevb_bias_activation", [_ptr, _ptr, _i64, _i64, _int])
        self._scale_rows = function("aevb_scale_rows", [_ptr, _ptr, _i64, _i64])
        self._latent_forward = function(
            "aevb_latent_forward", [_ptr, _ptr, _i64, _i64, _i64, _f32, _int, _ptr, _ptr, _ptr, _ptr, _ptr], _double
        )
        self._term_total = ctypes.c_double(0.0)
        self._latent_backward = function(
            "aevb_latent_backward", [_ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _f32, _int, _ptr, _ptr]
        )
        self._abs_sum = function("aevb_abs_sum", [_ptr, _i64], _double)
        self._sparse_rows = function("aevb_sparse_rows", [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr], _double)
        self._sparse_linear = function(
            "aevb_sparse_linear", [_ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _int]
        )
        self._sparse_weight_gradient = function(
            "aevb_sparse_weight_gradient", [_ptr, _ptr, _ptr, _i64, _i64, _ptr, _i64, _i64, _ptr, _ptr, _int]
        )
        self._adagrad = function("aevb_adagrad", [_ptr, _ptr, _ptr, _i64, _ptr, _double, _double, _f32, _f32])
        self._adam = function(
            "aevb_adam", [_ptr, _ptr, _ptr, _ptr, _i64, _ptr, _double, _double, _double, _double, _double, _i64]
        )
        self.threads = function("aevb_threads", [], _int)
        self._set_flush_denormals = function("aevb_set_flush_denormals", [_int, _int])

    # The functions returning a float return Σ|·| of what they wrote (NaN or inf when any element
    # is): the fused step's numeric guard bounds every weight gradient by such sums.

    def activation_forward(self, pre: torch.Tensor, out: torch.Tensor, activation: str | None) -> float:
        """out ← activation(pre), elementwise (out may be pre; None: the identity). Returns Σ|out|."""
        code = _IDENTITY if activation is None else ACTIVATION_CODES[activation]
        return self._forward(pre.data_ptr(), out.data_ptr(), pre.numel(), code)

    def activation_backward(
        self,
        grad: torch.Tensor,
        pre: torch.Tensor | None,
        out: torch.Tensor | None,
        activation: str | None,
        bias_grad: torch.Tensor,
    ) -> float:
        """grad (R, C) ← grad · activation′ in place (None: the identity), and bias_grad (C) ← its
        column sums. Returns Σ|grad|."""
        code = _IDENTITY if activation is None else ACTIVATION_CODES[activation]
        rows, cols = grad.shape
        return self._backward(
            grad.data_ptr(),
            _pointer(pre if pre is not None else grad),
            _pointer(out if out is not None else grad),
            rows,
            cols,
            code,
            bias_grad.data_ptr(),
        )

    def bernoulli(
        self, logits: torch.Tensor, x: torch.Tensor, samples: int, scale: float, log_lik: torch.Tensor
    ) -> float:
        """logits (L·M, D), x (M, D): log_lik (L·M) ← Σ_d log Bernoulli(x | sigmoid(logits)), nats;
        logits ← scale · (sigmoid(logits) − x) in place. Returns Σ log_lik (summed in double)."""
        points, dim = x.shape
        return self._bernoulli(logits.data_ptr(), x.data_ptr(), samples, points, dim, scale, log_lik.data_ptr())

    def gaussian(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        samples: int,
        bound: float | None,
        sigmoid_mean: bool,
        shared_raw_log_var: torch.Tensor | None,
        grad: torch.Tensor,
        grad_log_var: torch.Tensor | None,
        log_lik: torch.Tensor,
    ) -> float:
        """The Gaussian decoder's terms for out (L·M, 2D) = [mean input, raw log σ²], or (L·M, D)
        with ``shared_raw_log_var`` (D), and x (M, D): log_lik (L·M) ← Σ_d log N(x | mean, σ²), nats,
        with mean = sigmoid(out) when ``sigmoid_mean`` and log σ² = B·tanh(raw/B) (``bound`` B; None:
        raw); grad (like out) ← ∂log_lik/∂out; with ``shared_raw_log_var``, grad_log_var (L·M, D) ←
        ∂log_lik/∂log σ² per row. Returns Σ log_lik (summed in double)."""
        points, dim = x.shape
        return self._gaussian(
            out.data_ptr(),
            x.data_ptr(),
            samples,
            points,
            dim,
            bound or 0.0,
            int(sigmoid_mean),
            _pointer(shared_raw_log_var),
            grad.data_ptr(),
            _pointer(grad_log_var),
            log_lik.data_ptr(),
        )

    def bernoulli_log_lik(
        self,
        logits: torch.Tensor,
        x: torch.Tensor,
        samples: int,
        log_lik: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log_lik (L·M) ← Σ_d log Bernoulli(x | sigmoid(logits + bias)), nats, for logits (L·M, D),
        x (M, D) and bias (D) (None: zero); nothing else is written. Returns log_lik."""
        points, dim = x.shape
        if bias is None:
            bias = torch.zeros(dim, dtype=torch.float32)
        self._bernoulli_log_lik(
            logits.data_ptr(), bias.data_ptr(), x.data_ptr(), samples, points, dim, log_lik.data_ptr()
        )
        return log_lik

    def bias_activation(self, h: torch.Tensor, bias: torch.Tensor, activation: str | None) -> torch.Tensor:
        """h (R, C) ← activation(h + bias) in place, bias (C) (None activation: the identity). Returns h."""
        code = _IDENTITY if activation is None else ACTIVATION_CODES[activation]
        rows, cols = h.shape
        self._bias_activation(h.data_ptr(), bias.data_ptr(), rows, cols, code)
        return h

    def sparse_rows(self, x: torch.Tensor, rows: "SparseRows") -> float:
        """Collect the nonzeros of x (M, D) into ``rows``. Returns Σ|x|."""
        rows.size = x.shape[0]
        return self._sparse_rows(
            x.data_ptr(),
            x.shape[0],
            x.shape[1],
            rows.stride,
            rows.index.data_ptr(),
            rows.value.data_ptr(),
            rows.count.data_ptr(),
            ctypes.byref(rows.nonzeros),
        )

    def sparse_linear(self, rows: "SparseRows", weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> None:
        """out (M, out) ← x Wᵀ + b for the x held in ``rows``, W (out, in) in nn.Linear's layout."""
        out_features, in_features = weight.shape
        self._sparse_linear(
            rows.index.data_ptr(),
            rows.value.data_ptr(),
            rows.count.data_ptr(),
            rows.size,
            rows.stride,
            weight.data_ptr(),
            bias.data_ptr(),
            out_features,
            in_features,
            out.data_ptr(),
            rows.scratch.data_ptr(),
            rows.scratch_threads,
        )

    def sparse_weight_gradient(self, rows: "SparseRows", grad: torch.Tensor, grad_weight: torch.Tensor) -> None:
        """grad_weight (out, in) ← Gᵀ x for G (M, out) and the x held in ``rows``."""
        out_features, in_features = grad_weight.shape
        self._sparse_weight_gradient(
            rows.index.data_ptr(),
            rows.value.data_ptr(),
            rows.count.data_ptr(),
            rows.size,
            rows.stride,
            grad.data_ptr(),
            out_features,
            in_features,
            grad_weight.data_ptr(),
            rows.scratch.data_ptr(),
            rows.scratch_threads,
        )

    def abs_sum(self, tensor: torch.Tensor) -> float:
        """Σ|tensor| (NaN or inf when any element is)."""
        return self._abs_sum(tensor.data_ptr(), tensor.numel())

    def adagrad(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        state_sum: torch.Tensor,
        step: torch.Tensor,
        lr: float,
        lr_decay: float,
        weight_decay: float,
        eps: float,
    ) -> None:
        """One Adagrad step in place, the arithmetic of ``torch.optim.Adagrad`` with its fused
        kernel: step += 1 (a float32 0-dim tensor), lr / (1 + (step − 1)·lr_decay), g′ = g + wd·p,
        s += g′², p −= lr·g′/(√s + eps)."""
        self._adagrad(
            param.data_ptr(),
            grad.data_ptr(),
            state_sum.data_ptr(),
            param.numel(),
            step.data_ptr(),
            lr,
            lr_decay,
            weight_decay,
            eps,
        )

    def adam(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        step: torch.Tensor,
        lr: float,
        beta1: float,
        beta2: float,
        weight_decay: float,
        eps: float,
    ) -> None:
        """One Adam step in place, the arithmetic of ``torch.optim.Adam`` with its fused kernel on
        one thread: step += 1 (a float32 0-dim tensor), g′ = g + wd·p, m = β₁m + (1 − β₁)g′,
        v = β₂v + (1 − β₂)g′², p −= lr/(1 − β₁^step) · m / (√v / √(1 − β₂^step) + eps)."""
        self._adam(
            param.data_ptr(),
            grad.data_ptr(),
            exp_avg.data_ptr(),
            exp_avg_sq.data_ptr(),
            param.numel(),
            step.data_ptr(),
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
            TORCH_ADAM_VECTOR_WIDTH,
        )

    def set_flush_denormals(self, on: bool, threads: int) -> None:
        """Subnormals flushed to zero (``on``) or kept, on the calling thread and on ``threads``
        threads of torch's OpenMP pool (:mod:`aevb.denormals`; nothing where the CPU has no such mode)."""
        self._set_flush_denormals(int(on), int(threads))

    def scale_rows(self, matrix: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """matrix (R, C) ← weight[r] · matrix[r] in place."""
        rows, cols = matrix.shape
        self._scale_rows(matrix.data_ptr(), weight.data_ptr(), rows, cols)
        return matrix

    def latent_forward(
        self,
        heads: torch.Tensor,
        eps: torch.Tensor,
        bound: float | None,
        closed_form_kl: bool,
        z: torch.Tensor,
        std: torch.Tensor,
        log_var: torch.Tensor,
        term: torch.Tensor,
    ) -> tuple[float, float]:
        """heads (M, 2J) = [μ, raw log σ²], eps (L, M, J) → z (L·M, J), std and log_var (M, J), and
        term: KL(q‖p) per point (M) when ``closed_form_kl``, else log p(z) − log q(z|x) per (l, i) (L·M).
        Returns (Σ|z|, Σ term)."""
        samples, points, latent = eps.shape
        magnitude = self._latent_forward(
            heads.data_ptr(),
            eps.data_ptr(),
            samples,
            points,
            latent,
            bound or 0.0,
            int(closed_form_kl),
            z.data_ptr(),
            std.data_ptr(),
            log_var.data_ptr(),
            term.data_ptr(),
            ctypes.byref(self._term_total),
        )
        return magnitude, self._term_total.value

    def latent_backward(
        self,
        grad_z: torch.Tensor,
        eps: torch.Tensor,
        z: torch.Tensor,
        std: torch.Tensor,
        log_var: torch.Tensor,
        heads: torch.Tensor,
        bound: float | None,
        closed_form_kl: bool,
        weight: torch.Tensor | None,
        grad_heads: torch.Tensor,
    ) -> None:
        """grad_heads (M, 2J) ← ∂loss/∂heads from ∂loss/∂z (L·M, J) (``weight``: IWAE's per (l, i)
        weights / M, or None for 1/(L M))."""
        samples, points, latent = eps.shape
        self._latent_backward(
            grad_z.data_ptr(),
            eps.data_ptr(),
            z.data_ptr(),
            std.data_ptr(),
            log_var.data_ptr(),
            heads.data_ptr(),
            samples,
            points,
            latent,
            bound or 0.0,
            int(closed_form_kl),
            _pointer(weight),
            grad_heads.data_ptr(),
        )
