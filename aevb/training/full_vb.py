"""Algorithm 2 of App. F (full variational Bayes over the decoder's parameters) as an
:class:`~aevb.training.algorithm.Algorithm`: AEVB's step, optimiser and procedure on the full-bound
estimate of :mod:`aevb.objectives.full_vb`."""

from __future__ import annotations

from itertools import chain

import torch

from ..errors import AevbError
from ..models.config import ModelConfig
from ..models.families import check_estimator
from ..models.full_vb import FullVBVAE
from ..models.vae import VAE
from ..objectives.full_vb import full_bound_estimate
from .algorithm import AEVB, refuse_conditional
from .config import TrainConfig
from .distributed import SINGLE_PROCESS, ProcessGroup


class FullVariationalBayes(AEVB):
    """Algorithm 2 (App. F) as an :class:`aevb.training.Algorithm`: AEVB's step on the full-bound
    estimate of :func:`full_bound_estimate` per minibatch (its :meth:`objective`), with the
    optimiser, step-size selection, data order, evaluation and checkpoints of AEVB (§5). All its
    state is the model's parameters (μ_θ, log σ_θ, encoder), so checkpoints and exact resume need
    nothing more. Only the autograd engine differentiates this objective.

    Each step returns its minibatch's share of the full-bound estimate, Σ_i 𝓛̃_θ̃(x⁽ⁱ⁾) − (M/N) KL,
    so that the step-size selection of §5 ranks the candidates by the bound this algorithm
    maximises (at small N the KL term dominates it, and with the data term alone the selection
    picks a step size at which σ_θ takes far longer to leave its small initial value), and the
    ``minibatch_bound`` of metrics.jsonl is 𝓛(φ; X)/N. The evaluated ``train_bound`` and
    ``valid_bound`` are E_q(θ)[𝓛_θ(x)], without the KL term; :meth:`run_summary` adds it.
    """

    name = "full-vb"
    distributable = False

    @classmethod
    def from_config(cls, config: TrainConfig) -> FullVariationalBayes:
        return cls(config.prior_precision, config.num_samples, config.engine, config.estimator)

    def __init__(self, prior_precision: float = 1.0, num_samples: int = 1, engine: str = "auto", estimator: str = "B"):
        if not prior_precision > 0:
            raise AevbError("full-vb needs a proper prior N(0, I/λ) on θ: `prior_precision` must be > 0")
        if estimator.upper() != "B":
            raise AevbError(f"full-vb uses estimator B inside its bound (App. F, Example F.1), not {estimator}")
        super().__init__("B", num_samples, engine)
        self.estimator_name = None  # not an SGVB estimator of §2.3: autograd differentiates it
        self.prior_precision = prior_precision
        self.dataset_size: int | None = None

    #: Options every model it trains has: a Gaussian posterior over the decoder's parameters.
    model_options = {"decoder_posterior": "gaussian"}

    def check_model(self, config: ModelConfig) -> None:
        refuse_conditional(self.name, config)
        if config.decoder_posterior != "gaussian":
            raise AevbError(
                "full-vb trains a model with a posterior over the decoder's parameters "
                "(ModelConfig decoder_posterior='gaussian')"
            )
        check_estimator(config, self.estimator)

    def objective(
        self, model: FullVBVAE, x: torch.Tensor, num_samples: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(M,) per-point shares of the full-bound estimate, 𝓛̃_θ̃(x⁽ⁱ⁾) − KL/N, nats: their mean is
        :attr:`FullBoundEstimate.per_datapoint`, the objective of Algorithm 2 per datapoint."""
        estimate = full_bound_estimate(model, x, self.dataset_size, self.prior_precision, num_samples, noise=noise)
        return estimate.datapoint_bounds - estimate.parameter_kl / self.dataset_size

    def setup(self, model: VAE, train: torch.Tensor, group: ProcessGroup = SINGLE_PROCESS) -> None:
        if not isinstance(model, FullVBVAE):
            raise AevbError(
                "full-vb trains a model with a posterior over the decoder's parameters "
                "(ModelConfig decoder_posterior='gaussian')"
            )
        if group.distributed:
            raise AevbError("multi-process training runs AEVB only, not full-vb")
        self.dataset_size = train.shape[0]
        super().setup(model, train, group)

    def parameter_groups(self, model: FullVBVAE, weight_decay: float) -> list[dict]:
        """Optimiser groups: the encoder with MAP's weight decay, μ_θ and log σ_θ with none (their
        prior is the KL term). In ``model.parameters()`` order, which checkpoints rely on."""
        theta = {id(p) for p in chain(model.decoder.parameters(), model.decoder_log_scale.parameters())}
        return [
            {"params": [p for p in model.parameters() if id(p) not in theta], "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if id(p) in theta], "weight_decay": 0.0},
        ]

    def step_bound(self, model: FullVBVAE, evaluated_bound: float) -> float:
        """Its steps report the full bound, E_q(θ)[𝓛_θ(x)] − KL(q(θ) ‖ p(θ))/N per datapoint: at
        small N the KL term can be most of it, far below the evaluated bound."""
        with torch.no_grad():
            return evaluated_bound - model.decoder_parameter_kl(self.prior_precision).item() / self.dataset_size

    def run_summary(self, model: FullVBVAE, train_bound: float | None) -> dict:
        """For summary.json: KL(q(θ) ‖ p(θ)) (nats, and per training point) and the full bound per
        datapoint, ``train_bound`` (the mean of E_q(θ)[𝓛_θ(x)] on the training set) − KL/N."""
        with torch.no_grad():
            kl = model.decoder_parameter_kl(self.prior_precision).item()
        per_point = kl / self.dataset_size
        return {
            "decoder_parameter_kl": kl,
            "decoder_parameter_kl_per_datapoint": per_point,
            "full_train_bound": None if train_bound is None else train_bound - per_point,
        }
