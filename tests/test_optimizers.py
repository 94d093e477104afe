"""aevb.training.optimizers.Adagrad takes the same steps as torch.optim.Adagrad and keeps the same state."""

import copy

import torch

from aevb.training.optimizers import Adagrad


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
    assert optimizer.direct
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


def test_gradients_written_in_place_skipped_steps_and_a_reloaded_state_match_torch_adagrad():
    """The fused step writes into the same gradient tensors every step (aevb keeps the kernel's
    argument lists between steps); a step with found_inf = 1 changes nothing and is not counted;
    loading a state dict replaces the state tensors the lists point to."""
    from aevb.training.optimizers import guarded_step

    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(3)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    optimizer = Adagrad(ours, lr=0.1, weight_decay=0.01)
    reference_optimizer = torch.optim.Adagrad(reference, lr=0.1, weight_decay=0.01)
    for p in ours:
        p.grad = torch.zeros_like(p)
    for step in range(6):
        gradients = [torch.randn_like(p) for p in ours]
        skip = step == 2
        for p, q, g in zip(ours, reference, gradients):
            p.grad.copy_(g)            # in place: the same tensor as last step
            q.grad = g.clone()
        guarded_step(optimizer, torch.tensor(1.0 if skip else 0.0))
        if not skip:
            reference_optimizer.step()
        if step == 3:                  # a resume: new state tensors under the same parameters
            optimizer.load_state_dict(copy.deepcopy(reference_optimizer.state_dict()))   # (not shared)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for p, q in zip(ours, reference):
        torch.testing.assert_close(optimizer.state[p]["sum"], reference_optimizer.state[q]["sum"])
        assert optimizer.state[p]["step"].item() == reference_optimizer.state[q]["step"].item() == 5


def test_staged_schedule_keeps_its_proportions_over_any_run_length():
    from aevb.training.optimizers import IWAE_SCHEDULE, SCHEDULES, StagedSchedule

    schedule = StagedSchedule((1, 3), (1.0, 0.5))
    assert [schedule.factor(p) for p in (0.0, 0.2499, 0.25, 0.9999, 1.0)] == [1.0, 1.0, 0.5, 0.5, 0.5]
    starts = [(3 ** i - 1) / 2 / 3280 for i in range(8)]   # stage i starts after 1 + 3 + … + 3^(i−1) passes
    assert [IWAE_SCHEDULE.factor(start) for start in starts] == [10 ** (-i / 7) for i in range(8)]
    assert SCHEDULES["constant"].factor(0.5) == 1.0
