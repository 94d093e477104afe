"""aevb — Auto-Encoding Variational Bayes (Kingma & Welling, ICLR 2014) in PyTorch.

Where the paper's parts live:

* §2.3 SGVB estimators A and B, minibatch estimator ........ :mod:`aevb.objectives.estimators`
* §2.4 reparameterisation, App. B Gaussian KL .............. :mod:`aevb.models.distributions`
* §2.4 the other reparameterisable families ................ :mod:`aevb.models.families`
* §3 / App. C the variational auto-encoder ................. :mod:`aevb.models.vae`
* Algorithm 1 / §5 training procedure ...................... :mod:`aevb.training`
* how a step's gradient is computed (autograd, fused, C) ... :mod:`aevb.engines`
* §5 baselines: wake-sleep; Monte Carlo EM (App. E) ........ :mod:`aevb.baselines`
* evaluation of the bound; importance-sampled log p(x) ..... :mod:`aevb.evaluation`
* App. D marginal-likelihood estimator (HMC) ............... :mod:`aevb.evaluation.hmc_estimator`
* App. F full variational Bayes ............................ :mod:`aevb.models.full_vb`, :mod:`aevb.objectives.full_vb`
* the paper's figures; binarised-MNIST log p(x) (Burda) .. :mod:`aevb.experiments`
* data sets of §5 .......................................... :mod:`aevb.data`
* run directories, checkpoints, figures .................... :mod:`aevb.runs`, :mod:`aevb.checkpoint`, :mod:`aevb.figures`
* command line ............................................. :mod:`aevb.cli` (script: :mod:`aevb.console`)
"""

__version__ = "0.1.0"

from .errors import AevbError  # noqa: E402
from .lazy import lazy_names  # noqa: E402

# The rest is imported on first use (PEP 562): importing torch takes a second or more, and the
# console script (aevb.console) must be able to catch a Ctrl-C pressed meanwhile.
_LAZY = {
    "ESTIMATORS": "objectives",
    "estimator_a": "objectives",
    "estimator_b": "objectives",
    "minibatch_bound": "objectives",
    "BoundEstimate": "evaluation",
    "evaluate_bound": "evaluation",
    "VAE": "models",
    "ModelConfig": "models",
    "Trainer": "training",
    "TrainConfig": "training",
    "load": "runs",
}


__getattr__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "AevbError",
    "ESTIMATORS",
    "estimator_a",
    "estimator_b",
    "minibatch_bound",
    "BoundEstimate",
    "evaluate_bound",
    "VAE",
    "ModelConfig",
    "Trainer",
    "TrainConfig",
    "load",
    "__version__",
]
