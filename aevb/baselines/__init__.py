"""The algorithms the paper compares AEVB with (§5), as plug-ins for :class:`aevb.training.Trainer`.

* :class:`WakeSleep` — wake-sleep (Hinton et al., 1995) with the VAE's encoder as recognition
  model (Fig. 2, Fig. 3); :class:`WakeSleepUnclippedDreams`, the same without the authors'
  clipping of Gaussian dreams to [0, 1] (an ablation);
* :class:`MonteCarloEM` — Monte Carlo EM with HMC posterior samples, no encoder (App. E, Fig. 3).

Every algorithm by name, AEVB's and full VB's included: :mod:`aevb.training.algorithms`.
"""

from .mcem import MonteCarloEM
from .wake_sleep import WakeSleep, WakeSleepUnclippedDreams

__all__ = ["MonteCarloEM", "WakeSleep", "WakeSleepUnclippedDreams"]
