"""aevb.training.optimizers.Adagrad and Adam take the same steps as torch.optim.Adagrad and Adam
and keep the same state."""

import copy
import json
import math

import pytest
import torch

from aevb.training.optimizers import Adagrad, Adam, WarmupAdagrad

#: (aevb's class, torch's class, the state tensors besides "step")
PAIRS = [(Adagrad, torch.optim.Adagrad, ("sum",)), (Adam, torch.optim.Adam, ("exp_avg", "exp_avg_sq"))]


def _run(optimizer_class, steps=5, **kwargs):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    optimizer = optimizer_class(params, lr=0.1, weight_decay=0.01, **kwargs)
    for step in range(steps):
        for p in params:
            p.grad = torch.randn_like(p) * (step + 1)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("ours_class, torch_class, names", PAIRS)
def test_direct_fused_step_equals_torch(ours_class, torch_class, names):
    ours, optimizer = _run(ours_class)
    reference, reference_optimizer = _run(torch_class)
    assert optimizer.direct
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(optimizer.state.values(), reference_optimizer.state.values()):
        for name in names:
            torch.testing.assert_close(a[name], b[name])
        assert a["step"].item() == b["step"].item() == 5


@pytest.mark.parametrize("ours_class, torch_class, names", PAIRS)
def test_state_dict_round_trips_through_torch(ours_class, torch_class, names):
    ours, optimizer = _run(ours_class, steps=2)
    plain = torch_class(ours, lr=0.1, weight_decay=0.01)
    plain.load_state_dict(optimizer.state_dict())
    again = ours_class(ours, lr=0.1, weight_decay=0.01)
    again.load_state_dict(plain.state_dict())
    for p in ours:
        for name in names:
            torch.testing.assert_close(again.state[p][name], optimizer.state[p][name])


@pytest.mark.parametrize("ours_class, torch_class, names", PAIRS)
def test_gradients_written_in_place_skipped_steps_and_a_reloaded_state_match_torch(ours_class, torch_class, names):
    """The fused step writes into the same gradient tensors every step (aevb keeps the kernel's
    argument lists between steps); a step with found_inf = 1 changes nothing and is not counted
    (also the first, before Adam has made its state); loading a state dict replaces the state
    tensors the lists point to."""
    from aevb.training.optimizers import guarded_step

    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(3)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    reference = [torch.nn.Parameter(t.clone()) for t in start]
    optimizer = ours_class(ours, lr=0.1, weight_decay=0.01)
    reference_optimizer = torch_class(reference, lr=0.1, weight_decay=0.01)
    for p in ours:
        p.grad = torch.zeros_like(p)
    for step in range(7):
        gradients = [torch.randn_like(p) for p in ours]
        skip = step in (0, 3)
        for p, q, g in zip(ours, reference, gradients):
            p.grad.copy_(g)  # in place: the same tensor as last step
            q.grad = g.clone()
        guarded_step(optimizer, torch.tensor(1.0 if skip else 0.0))
        if not skip:
            reference_optimizer.step()
        if step == 4:  # a resume: new state tensors under the same parameters
            optimizer.load_state_dict(copy.deepcopy(reference_optimizer.state_dict()))  # (not shared)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for p, q in zip(ours, reference):
        for name in names:
            torch.testing.assert_close(optimizer.state[p][name], reference_optimizer.state[q][name])
        assert optimizer.state[p]["step"].item() == reference_optimizer.state[q]["step"].item() == 5


def test_adam_settings_the_kernel_call_does_not_cover_take_torchs_step():
    params = [torch.nn.Parameter(torch.randn(3))]
    assert Adam(params).direct
    assert not Adam(params, amsgrad=True).direct


def test_staged_schedule_keeps_its_proportions_over_any_run_length():
    from aevb.training.optimizers import IWAE_SCHEDULE, SCHEDULES, StagedSchedule

    schedule = StagedSchedule((1, 3), (1.0, 0.5))
    assert [schedule.factor(p) for p in (0.0, 0.2499, 0.25, 0.9999, 1.0)] == [1.0, 1.0, 0.5, 0.5, 0.5]
    starts = [(3**i - 1) / 2 / 3280 for i in range(8)]  # stage i starts after 1 + 3 + … + 3^(i−1) passes
    assert [IWAE_SCHEDULE.factor(start) for start in starts] == [10 ** (-i / 7) for i in range(8)]
    assert SCHEDULES["constant"].factor(0.5) == 1.0


def test_warmup_adagrad_is_the_authors_update():
    """anglepy's step_va: Σ g² from the first step, no move for ``warmup`` steps, then Adagrad's
    p −= lr · g / (√Σg² + ε); weight decay is part of g and of the sum. Checked in float64 by hand,
    on the fused path and on torch's own step, which must agree."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(5, generator=generator, dtype=torch.float64)
    gradients = [torch.randn(5, generator=generator, dtype=torch.float64) for _ in range(5)]
    lr, decay, eps, warmup = 0.1, 0.3, 1e-10, 2
    for fused in (True, False):
        parameter = torch.nn.Parameter(start.clone())
        optimizer = WarmupAdagrad([parameter], lr=lr, weight_decay=decay, eps=eps, warmup=warmup)
        optimizer.direct = optimizer.direct and fused
        expected, total = start.clone(), torch.zeros(5, dtype=torch.float64)
        for step, gradient in enumerate(gradients, start=1):
            parameter.grad = gradient.clone()
            optimizer.step()
            g = gradient + decay * expected
            total += g * g
            if step > warmup:
                expected = expected - lr * g / (torch.sqrt(total) + eps)
            if step <= warmup:
                assert torch.equal(parameter.detach(), start)
            assert torch.allclose(parameter.detach(), expected, rtol=1e-12, atol=1e-14)
        assert torch.allclose(optimizer.state[parameter]["sum"], total)
        assert optimizer.param_groups[0]["lr"] == lr  # (the warm-up's 0 is not left behind)


def test_warmup_adagrad_warms_up_again_from_a_state_dict_inside_the_warm_up():
    """A checkpoint written in the warm-up continues it: the step count decides, not the object."""
    parameter = torch.nn.Parameter(torch.ones(3))
    first = WarmupAdagrad([parameter], lr=0.5, warmup=3)
    for _ in range(2):
        parameter.grad = torch.ones(3)
        first.step()
    second = WarmupAdagrad([parameter], lr=0.5, warmup=3)
    second.load_state_dict(first.state_dict())
    parameter.grad = torch.ones(3)
    second.step()
    assert torch.equal(parameter.detach(), torch.ones(3))  # the third summed step: still no move
    parameter.grad = torch.ones(3)
    second.step()
    assert (parameter.detach() < 1).all()


def test_warmup_adagrad_trains_and_continues_exactly_from_a_checkpoint(tmp_path):
    """Chosen by name; no move in the first 100 steps, then learning at 0.1; its state (the sums and
    the step count) survives a checkpoint: a run extended from 20,000 to 30,000 samples ends with
    the parameters of one run of 30,000."""
    from safetensors.torch import load_file

    from aevb.cli import main

    settings = ["--latent-dim", "2", "--hidden-units", "20", "--step-size", "0.1", "--optimizer", "adagrad-warmup"]
    settings += ["--threads", "1", "--no-progress", "--evals-per-decade", "1"]
    assert main(["train", *settings, "--max-samples", "30000", "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *settings, "--max-samples", "20000", "--out", str(tmp_path / "extended")]) == 0
    assert main(["train", "--resume", str(tmp_path / "extended"), "--max-samples", "30000", "--no-progress"]) == 0
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["training"]["optimizer"] == "adagrad-warmup"
    history = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_bound"] > history[0]["train_bound"] + 10  # it learns (0.1 does not diverge)
    whole, extended = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "extended"))
    assert whole.keys() == extended.keys() and all(torch.equal(whole[k], extended[k]) for k in whole)


def test_the_iwae_codes_adam_is_their_theano_update():
    """yburda/iwae optimizers.py, step by step in float64: m from 0, v from 1, t from 1,
    α = lr·√(1 − β2^t)/(1 − β1^t), and the parameter moved by the moments from before the step, on
    the gradient of the minibatch's sum (the mean's times ``gradient_scale``)."""
    from aevb.training.iwae_code import IwaeCodeAdam

    generator = torch.Generator().manual_seed(1)
    start = torch.randn(4, generator=generator, dtype=torch.float64)
    gradients = [torch.randn(4, generator=generator, dtype=torch.float64) for _ in range(6)]
    lr, scale = 1e-3, 20.0
    parameter = torch.nn.Parameter(start.clone())
    optimizer = IwaeCodeAdam([parameter], lr=lr, gradient_scale=scale)
    theirs = start.clone()  # their parameters ascend their objective, the summed bound
    m, v, t = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 1.0
    for step, gradient in enumerate(gradients, start=1):
        parameter.grad = gradient.clone()
        optimizer.step()
        g = -scale * gradient  # the gradient of their objective, the summed bound
        alpha = lr * (1 - 0.999**t) ** 0.5 / (1 - 0.99**t)
        theirs, m, v, t = (
            theirs + alpha * m / (torch.sqrt(v) + 1e-4),
            0.99 * m + 0.01 * g,
            0.999 * v + 0.001 * g * g,
            t + 1,
        )
        assert torch.allclose(parameter.detach(), theirs, rtol=1e-12, atol=1e-15), step
        if step == 1:
            assert torch.equal(parameter.detach(), start)  # no first moment yet: no move


def test_the_iwae_code_schedule_rounds_each_stage_to_two_figures():
    from aevb.training.optimizers import IWAE_CODE_SCHEDULE, IWAE_PASSES

    starts = [sum(IWAE_PASSES[:i]) / sum(IWAE_PASSES) for i in range(8)]
    rates = [1e-3 * IWAE_CODE_SCHEDULE.factor(start) for start in starts]
    assert rates == pytest.approx([1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4], rel=1e-12)


def test_the_iwae_codes_adam_trains_through_the_trainer_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    from aevb.cli import main

    settings = ["--latent-dim", "2", "--hidden-units", "20", "--step-size", "1e-3", "--optimizer", "adam-iwae-code"]
    settings += ["--schedule", "constant", "--batch-size", "20", "--threads", "1", "--no-progress"]
    settings += ["--evals-per-decade", "1", "--prior-precision", "0"]
    assert main(["train", *settings, "--max-samples", "30000", "--out", str(tmp_path / "whole")]) == 0
    assert main(["train", *settings, "--max-samples", "20000", "--out", str(tmp_path / "extended")]) == 0
    assert main(["train", "--resume", str(tmp_path / "extended"), "--max-samples", "30000", "--no-progress"]) == 0
    history = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_bound"] > history[0]["train_bound"] + 10  # it learns
    whole, extended = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "extended"))
    assert all(torch.equal(whole[k], extended[k]) for k in whole)


@pytest.mark.parametrize("on_host", [True, False])
def test_skipped_steps_counts_nan_bounds_and_reads_them_as_zero(on_host):
    """The trainer's count of skipped steps: the host's reading of the value (a CPU) and the
    device's tensor operations (a GPU, here run on the CPU) agree."""
    from aevb.training.numeric_guard import SkippedSteps

    skipped = SkippedSteps(True, torch.device("cpu"))
    skipped._on_host = on_host
    total = torch.zeros(())
    for value, batch in ((-3.5, 100), (math.nan, 100), (-2.0, 40), (math.nan, 7)):
        total += skipped.count(torch.tensor(value), batch)
    assert total.item() == -5.5
    assert skipped.steps(lambda tensor: tensor) == 2
    assert skipped.samples() == 107
    unguarded = SkippedSteps(False, torch.device("cpu"))
    assert math.isnan(unguarded.count(torch.tensor(math.nan), 10).item())
    assert unguarded.steps(lambda tensor: tensor) == 0 and unguarded.samples() == 0
