"""aevb.optimizers.Adagrad takes the same steps as torch.optim.Adagrad and keeps the same state."""

import torch

from aevb.optimizers import Adagrad


def _run(optimizer_class, steps=5, **kwargs):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    optimizer = optimizer_class(params, lr=0.1, weight_decay=0.01, **kwargs)
    for step in range(steps):
        for p in params:
            p.grad = torch.randn_like(p) * (step + 1)
        optimizer.step()
    return params, optimizer


def test_direct_fused_adagrad_equals_torch_adagrad():
    ours, optimizer = _run(Adagrad)
    reference, reference_optimizer = _run(torch.optim.Adagrad)
    assert optimizer._direct
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(optimizer.state.values(), reference_optimizer.state.values()):
        torch.testing.assert_close(a["sum"], b["sum"])
        assert a["step"].item() == b["step"].item() == 5


def test_adagrad_state_dict_round_trips_through_torch_adagrad():
    ours, optimizer = _run(Adagrad, steps=2)
    plain = torch.optim.Adagrad(ours, lr=0.1, weight_decay=0.01)
    plain.load_state_dict(optimizer.state_dict())
    again = Adagrad(ours, lr=0.1, weight_decay=0.01)
    again.load_state_dict(plain.state_dict())
    for p in ours:
        torch.testing.assert_close(again.state[p]["sum"], optimizer.state[p]["sum"])
