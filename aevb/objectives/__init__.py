"""What training maximises: the SGVB estimators of §2.3 (A, B; the minibatch estimator of eq. 8),
the importance-weighted bound of Burda et al., and full VB's bound (App. F)."""

from .estimators import (
    ESTIMATORS,
    LogLikelihood,
    bound_estimator,
    decoder_log_likelihood,
    estimator_a,
    estimator_b,
    get_estimator,
    iwae_bound,
    log_importance_weights,
    minibatch_bound,
)

__all__ = [
    "ESTIMATORS",
    "LogLikelihood",
    "bound_estimator",
    "decoder_log_likelihood",
    "estimator_a",
    "estimator_b",
    "get_estimator",
    "iwae_bound",
    "log_importance_weights",
    "minibatch_bound",
]
