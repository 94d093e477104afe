"""Adam as Burda, Grosse & Salakhutdinov's code runs it (github.com/yburda/iwae at ``78a6075``,
``optimizers.py``), for measuring how much the log-likelihood protocol's numbers depend on it
(docs/results.md, the protocol's differences).

Their class differs from Kingma & Ba's Adam, and from torch's, in four ways, all kept here:

* β1 = 0.99, the class default (``experiments.py`` passes only the step size), not the paper's 0.9;
* the second moments start at 1, not 0, while the bias correction still assumes 0 (``optimizers.py:16,30``);
* Theano applies every update from the values before the step, so the parameter moves by the
  moments of the *previous* step (at the first step the first moment is 0: no move);
* ε = 1e-4 is added to √v of the gradient of the minibatch's *sum* of bounds.

aevb's loss is the minibatch's mean: ``gradient_scale`` (the minibatch size) turns its gradient into
theirs, which matters because v starts at 1 and ε is absolute.
"""

from __future__ import annotations

import torch


class IwaeCodeAdam(torch.optim.Optimizer):
    """Burda et al.'s Adam (module docstring). ``lr``: the step size (their staged schedule sets it);
    ``betas``: (β1, β2); ``eps``: on √v of the summed gradient; ``gradient_scale``: the factor that
    makes the loss's gradient the gradient of their objective (a minibatch's sum: the batch size);
    ``weight_decay``: λ·p added to the gradient (their runs have none)."""

    update_rule = None  # (no native kernel restates it: the engines leave the update to step())
    STATE = ("exp_avg", "exp_avg_sq")
    #: The trainer passes ``gradient_scale=`` the minibatch size (the loss is a mean; theirs a sum).
    takes_gradient_scale = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.99, 0.999),
        eps: float = 1e-4,
        gradient_scale: float = 1.0,
        weight_decay: float = 0.0,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "gradient_scale": gradient_scale}
        super().__init__(params, defaults | {"weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = torch.ones((), dtype=torch.float32)  # their timestep starts at 1
                    state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.ones_like(parameter, memory_format=torch.preserve_format)
                gradient = parameter.grad
                if group["weight_decay"]:
                    gradient = gradient.add(parameter, alpha=group["weight_decay"])
                gradient = gradient * group["gradient_scale"]
                t = float(state["step"])
                alpha = group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
                # The move reads the moments as they were before this step (Theano's simultaneous updates).
                parameter.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]), value=-alpha)
                state["exp_avg"].mul_(beta1).add_(gradient, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
                state["step"] += 1
        return loss
