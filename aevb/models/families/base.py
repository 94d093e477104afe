"""What the scalar families of :mod:`aevb.models.families` share: parameters broadcast against each
other, stored under the names of ``arg_constraints`` (in its order), and ``expand`` as torch's own
distributions implement it."""

from __future__ import annotations

import torch
from torch.distributions import Distribution
from torch.distributions.utils import broadcast_all


class ElementwiseDistribution(Distribution):
    """A distribution whose batch shape is the broadcast shape of its parameters, named by the
    keys of ``arg_constraints``; subclasses pass their parameters in that order."""

    def __init__(self, *parameters, validate_args=None):
        values = broadcast_all(*parameters)
        for name, value in zip(self.arg_constraints, values):
            setattr(self, name, value)
        super().__init__(values[0].shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        for name in self.arg_constraints:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        Distribution.__init__(new, torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new


class SymmetricAboutLoc:
    """For a family symmetric and unimodal about ``loc``: its mean and its mode are ``loc``."""

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc
