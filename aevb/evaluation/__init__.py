"""Measuring a trained model, in nats per datapoint.

* :mod:`~aevb.evaluation.bound` ............... the variational lower bound on a dataset (§2.3)
* :mod:`~aevb.evaluation.importance_sampling` . log p(x) by importance sampling (Burda et al.'s protocol)
* :mod:`~aevb.evaluation.hmc` ................. Hybrid Monte Carlo
* :mod:`~aevb.evaluation.hmc_estimator` ....... the marginal-likelihood estimator of Appendix D
* :mod:`~aevb.evaluation.decoding` ............ the fast log p(x|z) they hand the estimators (no gradients)
"""

from .bound import BoundEstimate, default_chunk_rows, evaluate_bound, per_datapoint_bound

__all__ = ["BoundEstimate", "default_chunk_rows", "evaluate_bound", "per_datapoint_bound"]
