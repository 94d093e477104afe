"""aevb — Auto-Encoding Variational Bayes (Kingma & Welling, ICLR 2014) in PyTorch.

Where the paper's parts live:

* §2.3 SGVB estimators A and B, minibatch estimator ........ :mod:`aevb.estimators`
* §2.4 reparameterisation, App. B Gaussian KL .............. :mod:`aevb.distributions`
* §3 / App. C the variational auto-encoder ................. :mod:`aevb.model`
* Algorithm 1 / §5 training procedure ...................... :mod:`aevb.training`
* evaluation of the bound .................................. :mod:`aevb.evaluation`
* data sets of §5 .......................................... :mod:`aevb.data`
* run directories, checkpoints, figures .................... :mod:`aevb.runs`, :mod:`aevb.checkpoint`, :mod:`aevb.figures`
* command line ............................................. :mod:`aevb.cli`
"""

__version__ = "0.1.0"

from .errors import AevbError  # noqa: E402
from .estimators import ESTIMATORS, estimator_a, estimator_b, minibatch_bound  # noqa: E402
from .evaluation import BoundEstimate, evaluate_bound  # noqa: E402
from .model import VAE, ModelConfig  # noqa: E402
from .training import Trainer, TrainConfig  # noqa: E402

__all__ = [
    "AevbError", "ESTIMATORS", "estimator_a", "estimator_b", "minibatch_bound", "BoundEstimate",
    "evaluate_bound", "VAE", "ModelConfig", "Trainer", "TrainConfig", "__version__",
]
