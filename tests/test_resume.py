"""Exact resume: a run continued from any of its checkpoints ends with the parameters, bit for bit,
of the same run never interrupted — with the step-size selection of §5 in it, mid-epoch, for both
engines and for the baselines (MCEM carries per-datapoint chains in its state)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from aevb import VAE, ModelConfig
from aevb.baselines import ALGORITHMS
from aevb.training import Trainer, TrainConfig


def _train(data, config, algorithm, **fit_options):
    model = VAE(ModelConfig(data_dim=data.shape[1], latent_dim=3, hidden_units=16))
    trainer = Trainer(model, data, config, algorithm=ALGORITHMS[algorithm](config))
    result = trainer.fit(**fit_options)
    return model, result


@pytest.mark.parametrize("algorithm, options", [
    ("aevb", {"engine": "fused", "binarize": "dynamic"}),
    ("aevb", {"engine": "autograd", "estimator": "IWAE", "num_samples": 2}),
    ("wake-sleep", {}),
    ("mcem", {"step_size": 0.01}),
])
def test_resuming_from_any_checkpoint_reproduces_the_uninterrupted_run(algorithm, options):
    torch.manual_seed(0)
    data = torch.rand(230, 12)   # 230 rows, M = 20: epochs end mid-minibatch
    config = TrainConfig(batch_size=20, max_samples=2100, selection_steps=8, first_eval=400, evals_per_decade=4,
                         seed=4, **options)
    reference, expected = _train(data, config, algorithm)

    checkpoints = []
    _train(data, config, algorithm, checkpoint_every=7, on_checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))
    assert len(checkpoints) > 10
    for state in random.Random(1).sample(checkpoints, 4) + [checkpoints[0], checkpoints[-2]]:
        model, result = _train(data, config, algorithm, resume=state)
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (state.samples, name)
        assert [m.samples for m in result.history] == [m.samples for m in expected.history]
        bounds = torch.tensor([m.minibatch_bound for m in result.history])
        assert torch.allclose(bounds, torch.tensor([m.minibatch_bound for m in expected.history]),
                              rtol=0, atol=0, equal_nan=True)   # NaN for MCEM, which has no bound
        assert result.step_size == expected.step_size
