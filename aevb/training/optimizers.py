"""The optimisers of §5 (Adagrad; Adam as an option), as ``torch.optim`` classes, and the
step-size schedules a run can follow (:data:`SCHEDULES`).

:class:`Adagrad` and :class:`Adam` are ``torch.optim.Adagrad`` and ``torch.optim.Adam`` with a
shorter path to the same fused kernels: the library's ``step`` regroups every tensor by device and
dtype on every call, Python work that is not small next to the kernel itself on a model of a few
tensors (measured: docs/performance.md). When all parameters share one device and dtype (always,
for an aevb model) these classes call ``torch._fused_adagrad_`` / ``torch._fused_adam_`` directly
with the state the library classes keep, so state dicts, checkpoints and results are those of
``torch.optim.Adagrad(fused=True)`` / ``torch.optim.Adam(fused=True)``; anything else falls back to
the library's step.
"""

from __future__ import annotations

import bisect

import torch

from .iwae_code import IwaeCodeAdam


class _DirectFusedStep:
    """The direct call of a ``torch.optim`` class's fused kernel (mixed in before the class):
    ``STATE`` names the per-parameter state tensors the kernel takes after the gradients, and
    :meth:`_kernel` calls it on one group's lists."""

    STATE: tuple[str, ...] = ()
    KERNEL = ""
    DEFAULT_LR = 1e-3

    def __init__(self, params, lr: float | None = None, weight_decay: float = 0.0, **kwargs):
        lr = self.DEFAULT_LR if lr is None else lr  # (torch's default for the class)
        try:
            super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # a device or torch without the fused kernel
            super().__init__(params, lr=lr, weight_decay=weight_decay, **kwargs)
        self.direct = hasattr(torch, self.KERNEL) and all(
            group.get("fused") and self._direct_group(group) for group in self.param_groups
        )

    def _direct_group(self, group: dict) -> bool:
        """Whether the kernel call of :meth:`_kernel` covers every setting of ``group``."""
        return True

    def step_lr(self, group: dict) -> float:
        """The step size this step applies to ``group``: its ``lr`` (a warm-up says 0)."""
        return group["lr"]

    @torch.no_grad()
    def step(self, closure=None):
        lrs = [self.step_lr(group) for group in self.param_groups]  # (before this step is counted)
        if closure is not None or not self.direct:
            return self._library_step(closure, lrs)
        found_inf = getattr(self, "found_inf", None)  # set by guarded_step (and by AMP's GradScaler)
        every_lists = [self.kernel_lists(index, group) for index, group in enumerate(self.param_groups)]
        if any(lists is None for lists in every_lists):
            return self._library_step(closure, lrs)
        for group, lists, lr in zip(self.param_groups, every_lists, lrs):
            if not lists[0]:
                continue
            params, grads, *states, steps = lists
            # A skipped step does not count, as in torch.optim: add 1 − found_inf.
            torch._foreach_add_(steps, 1 if found_inf is None else 1 - found_inf)
            self._kernel(params, grads, states, steps, group, lr, found_inf)
        return None

    def _library_step(self, closure, lrs: list[float]):
        """The ``torch.optim`` class's own step, at :meth:`step_lr`'s step sizes."""
        given = [group["lr"] for group in self.param_groups]
        for group, lr in zip(self.param_groups, lrs):
            group["lr"] = lr
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, given):
                group["lr"] = lr

    def kernel_lists(self, index: int, group: dict):
        """(params, grads, *state lists, steps) of a group for the fused kernel, or None where it
        does not apply (or the state is not made yet). Kept between steps (building them is a sizeable fraction of the kernel's
        time on the paper's model; docs/performance.md) and rebuilt when a gradient tensor is not
        the one seen last time."""
        cache = self.__dict__.setdefault("_lists", {})
        cached = cache.get(index)
        if (
            cached is not None
            and len(cached[0]) == len(group["params"])
            and all(p.grad is g for p, g in zip(group["params"], cached[1]))
        ):
            return cached
        params = [p for p in group["params"] if p.grad is not None]
        if (
            any(p.grad.is_sparse or p.is_complex() for p in params)
            or len({(p.device, p.dtype) for p in params}) > 1
            or isinstance(group["lr"], torch.Tensor)
        ):
            return None
        states = [self.state[p] for p in params]
        if not all(name in state for state in states for name in (*self.STATE, "step")):
            return None  # (Adam makes its state at its first step)
        lists = (
            params,
            [p.grad for p in params],
            *([state[name] for state in states] for name in self.STATE),
            [state["step"] for state in states],
        )
        if len(params) == len(group["params"]):
            cache[index] = lists
        return lists

    def load_state_dict(self, state_dict):
        self.__dict__.pop("_lists", None)  # the state tensors are new
        super().load_state_dict(state_dict)


class Adagrad(_DirectFusedStep, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` (fused when possible); same arguments, same state, faster ``step``."""

    update_rule = "adagrad"  # what the native engine's update kernel must match (aevb.engines.native)
    STATE = ("sum",)
    KERNEL = "_fused_adagrad_"
    DEFAULT_LR = 1e-2

    def _kernel(self, params, grads, states, steps, group, lr, found_inf) -> None:
        torch._fused_adagrad_(
            params,
            grads,
            *states,
            steps,
            lr=lr,
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            found_inf=found_inf,
        )


class Adam(_DirectFusedStep, torch.optim.Adam):
    """``torch.optim.Adam`` (fused when possible); same arguments, same state, faster ``step``
    (AMSGrad, decoupled weight decay and tensor betas take the library's step)."""

    update_rule = "adam"  # what the native engine's update kernel must match (aevb.engines.native)
    STATE = ("exp_avg", "exp_avg_sq")
    KERNEL = "_fused_adam_"
    DEFAULT_LR = 1e-3

    def _direct_group(self, group: dict) -> bool:
        return not (
            group.get("amsgrad")
            or group.get("decoupled_weight_decay")
            or group.get("differentiable")
            or any(isinstance(beta, torch.Tensor) for beta in group["betas"])
        )

    def _kernel(self, params, grads, states, steps, group, lr, found_inf) -> None:
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            params,
            grads,
            *states,
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            found_inf=found_inf,
        )


class WarmupAdagrad(Adagrad):
    """Adagrad as the authors' AEVB code runs it (anglepy ``wzoptim.step_va``, 2014-04; ``step_vae``
    later): the squared gradients are summed from the first step, but the parameters move only once
    ``warmup`` steps have been summed, so the large gradients of the untrained model stay in the
    accumulator and temper every later step. Weight decay (the N(0, I) prior on the parameters,
    §5) is part of the gradient, and so of the sum, as the prior's gradient is in theirs.

    The warm-up steps are :class:`Adagrad` steps at step size 0 (they add g² to the sum and leave
    the parameters as they are); every later step is :class:`Adagrad`'s, fused kernels and the
    native engine's update included. The one arithmetic difference from their code is where ε
    sits: p −= lr · g / (√Σg² + ε) here (torch's ε = 1e-10 on the minibatch mean's gradient),
    lr · g / √(Σg² + 1e-8) in theirs (on the minibatch sum's gradient): the two differ only for a
    parameter whose summed squared gradient is below about 1e-8, one that barely moves in either.

    Args:
        params: the parameters, or parameter groups.
        lr: the global step size.
        weight_decay: λ of the gradient λ·p added to each parameter's gradient.
        warmup: steps whose squared gradients are summed before the first update (theirs: 100).
        **kwargs: the rest of ``torch.optim.Adagrad``'s (``eps``, ...).
    """

    def __init__(self, params, lr: float = 1e-2, weight_decay: float = 0.0, warmup: int = 100, **kwargs):
        super().__init__(params, lr=lr, weight_decay=weight_decay, **kwargs)
        self.defaults["warmup"] = warmup
        for group in self.param_groups:
            group.setdefault("warmup", warmup)
        self._warm = False  # whether every group is past its warm-up (then no step count is read)

    def step_lr(self, group: dict) -> float:
        if self._warm:
            return group["lr"]
        if not self._warmed_up(group):  # (read on the host: a synchronisation per step, warm-up steps only)
            return 0.0
        self._warm = all(self._warmed_up(other) for other in self.param_groups)
        return group["lr"]

    def _warmed_up(self, group: dict) -> bool:
        """Whether ``group`` has summed its ``warmup`` steps (its parameters' step counts)."""
        taken = max((int(self.state[p]["step"]) for p in group["params"] if p in self.state), default=0)
        return taken >= group["warmup"]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._warm = False  # (the loaded step counts decide it again)


def non_finite(
    parameters: list[torch.Tensor], loss: torch.Tensor, flat_gradient: torch.Tensor | None = None
) -> torch.Tensor:
    """1.0 (float32, 0-dim, on the parameters' device) when ``loss`` or any gradient is NaN or
    infinite, else 0.0 — computed without a host synchronisation (one pass over the gradients;
    one reduction when they are all views of ``flat_gradient``).

    A sum is NaN or infinite when one of its terms is (finite gradients overflowing float32 in a
    sum would need elements near 1e32); it is the cheapest reduction — torch's max-norm kernel
    is far slower (docs/performance.md).
    """
    total = flat_gradient.sum() if flat_gradient is not None else torch.stack([p.grad.sum() for p in parameters]).sum()
    total = total + loss.detach().to(total.dtype)
    return (~torch.isfinite(total)).to(torch.float32)


def guarded_step(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``bad`` (from :func:`non_finite`) is 1: a non-finite gradient
    never reaches the parameters or the optimiser's state. Fused optimisers take ``bad`` as their
    ``found_inf`` and skip on the device (no host synchronisation); others check it on the host."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = bad
        try:
            optimizer.step()
        finally:
            optimizer.found_inf = None
    elif not bad.item():
        optimizer.step()


#: Optimisers by the names ``--optimizer`` takes; each is called as ``factory(params, lr=, weight_decay=)``,
#: with ``eps=`` where a run sets the optimiser's ε.
OPTIMIZERS = {"adagrad": Adagrad, "adagrad-warmup": WarmupAdagrad, "adam": Adam, "adam-iwae-code": IwaeCodeAdam}


class ConstantSchedule:
    """The step size stays where it was chosen (the paper's Adagrad runs, §5)."""

    #: Whether the step size at a sample depends on the run's total: a run extended to a larger
    #: budget (:mod:`aevb.runs.extend`) is the run at that budget only where it does not.
    depends_on_budget = False

    def factor(self, progress: float) -> float:
        """Multiplier of the run's step size after a fraction ``progress`` in [0, 1] of its samples."""
        return 1.0


class StagedSchedule:
    """Stages of ``passes[i]`` passes at step size × ``factors[i]``, stretched over the run.

    The stages keep their proportions whatever the run's length, so a run of a fraction of the
    published number of samples follows the same shape of decay, each stage shortened alike.
    """

    depends_on_budget = True  # (the stages are fractions of the run)

    def __init__(self, passes: tuple[float, ...], factors: tuple[float, ...]):
        total = float(sum(passes))
        self.boundaries = [sum(passes[: i + 1]) / total for i in range(len(passes) - 1)]
        self.factors = tuple(factors)

    def factor(self, progress: float) -> float:
        return self.factors[bisect.bisect_right(self.boundaries, progress)]


#: Burda, Grosse & Salakhutdinov (2015), §5: 3^i passes at 0.001 · 10^(−i/7), i = 0 … 7 (3280 passes).
IWAE_PASSES = tuple(3**i for i in range(8))
IWAE_SCHEDULE = StagedSchedule(IWAE_PASSES, tuple(10 ** (-i / 7) for i in range(8)))

#: The same as Burda et al.'s code sets it: each stage's step size rounded to two figures,
#: ``1e-4 * round(10 ** (1 - i/7), 1)`` (``experiments.py``; 7.2e-4 for 7.197e-4).
IWAE_CODE_SCHEDULE = StagedSchedule(IWAE_PASSES, tuple(round(10 ** (1 - i / 7), 1) / 10 for i in range(8)))

#: Step-size schedules by the names ``TrainConfig.schedule`` takes.
SCHEDULES = {"constant": ConstantSchedule(), "iwae": IWAE_SCHEDULE, "iwae-code": IWAE_CODE_SCHEDULE}
