"""Subnormal floats flushed to zero while aevb trains and evaluates (aevb.denormals): on every
thread the work may use, given back afterwards, and without moving a parameter of a run."""

from __future__ import annotations

import platform

import pytest
import torch

from aevb import denormals, native
from aevb.chunk_workers import ChunkWorkers
from aevb.models.vae import VAE, ModelConfig
from aevb.threads import StepThreads
from aevb.training import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"),
    reason="a CPU whose flush-to-zero mode aevb sets (x86's MXCSR, AArch64's FPCR)",
)

#: Enough subnormals that torch splits a product with them among its threads.
SUBNORMALS = torch.full((1 << 20,), 1e-39)


def surviving() -> int:
    """How many of SUBNORMALS a product by one keeps (all where they are kept, none where flushed)."""
    return int(((SUBNORMALS * 1.0) != 0).sum())


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    kernels = native.load()
    if kernels is None or kernels.threads() < 2:
        torch.set_num_threads(previous)
        pytest.skip("torch's pool threads are reached through the native library's OpenMP build")
    yield
    torch.set_num_threads(previous)


def test_inside_the_block_every_thread_flushes_and_the_mode_comes_back_after(two_threads):
    kept = SUBNORMALS.numel()
    assert surviving() == kept and not denormals.thread_flushes()
    with denormals.flushed(2):
        assert surviving() == 0 and denormals.thread_flushes()
        with denormals.flushed(2):  # a block inside another keeps the outer block's mode after it
            pass
        assert surviving() == 0
    assert surviving() == kept and not denormals.thread_flushes()


def test_a_mode_set_before_is_kept(two_threads):
    denormals.set_flushed(True, 2)
    try:
        with denormals.flushed(2):
            pass
        assert surviving() == 0
    finally:
        denormals.set_flushed(False, 2)
    assert surviving() == SUBNORMALS.numel()


def test_the_thread_policy_flushes_from_start_to_stop(two_threads):
    policy = StepThreads((2, 1))
    policy.start()
    try:
        assert surviving() == 0
    finally:
        policy.stop()
    assert surviving() == SUBNORMALS.numel() and torch.get_num_threads() == 2


def test_the_environment_can_keep_subnormals(two_threads, monkeypatch):
    monkeypatch.setenv("AEVB_FLUSH_SUBNORMALS", "0")
    with denormals.flushed(2):
        assert surviving() == SUBNORMALS.numel()
    policy = StepThreads((2, 1))
    policy.start()
    try:
        assert surviving() == SUBNORMALS.numel()
    finally:
        policy.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluation_chunks_run_flushed_on_their_workers(workers):
    def task():
        return int(((torch.full((64,), 1e-39) * 1.0) != 0).sum())

    results = list(ChunkWorkers(workers).map((index, task) for index in range(8)))
    assert [kept for _, kept in results] == [0] * 8
    assert not denormals.thread_flushes()


def test_flushing_moves_no_parameter_of_a_run(monkeypatch):
    # Adam's first moment of a weight whose input column is lit in one row of the training set decays by
    # beta1 each step after that row was drawn, through the subnormal range (about 745 to 900 steps after,
    # from ~1e-4): 200 such columns drawn at random steps of a 1000-step run leave some there at its end.
    torch.manual_seed(0)
    rows, common, rare = 20_000, 16, 200
    data = torch.zeros(rows, common + rare)
    data[:, :common] = (torch.rand(rows, common) < 0.4).float()
    data[torch.randperm(rows)[:rare], torch.arange(common, common + rare)] = 1.0
    config = TrainConfig(
        optimizer="adam",
        prior_precision=0.0,  # (a prior's weight decay would keep every gradient away from zero)
        step_size=1e-3,
        batch_size=20,
        max_samples=20_000,
        first_eval=10**9,
        eval_subset=50,
    )

    def run() -> tuple[dict, dict]:
        model = VAE(ModelConfig(data_dim=common + rare, latent_dim=2, hidden_units=8))
        final = {}
        Trainer(model, data, config, threads=1).fit(
            on_checkpoint=lambda state: final.update(
                model={k: v.clone() for k, v in state.model.items()},
                moments=[s["exp_avg"].clone() for s in state.optimizer["state"].values()],
            ),
            checkpoint_every=1000,
        )
        return final["model"], final["moments"]

    flushed_model, flushed_moments = run()
    monkeypatch.setenv("AEVB_FLUSH_SUBNORMALS", "0")  # subnormals kept
    kept_model, kept_moments = run()

    tiny = torch.finfo(torch.float32).tiny
    subnormal = sum(int(((m != 0) & (m.abs() < tiny)).sum()) for m in kept_moments)
    assert subnormal > 0  # the run without flushing made subnormals ...
    assert all(int(((m != 0) & (m.abs() < tiny)).sum()) == 0 for m in flushed_moments)  # ... flushed here
    for name, value in kept_model.items():
        assert torch.equal(value, flushed_model[name]), name  # and no parameter moved by a bit
    for kept, flushed in zip(kept_moments, flushed_moments):
        assert torch.equal(torch.where(kept.abs() < tiny, 0.0, kept), flushed)


def test_with_the_prior_the_weights_it_decays_to_subnormals_are_zero_and_nothing_else_moves(monkeypatch):
    # §5's Adagrad with the N(0, I) prior: the first-layer weights of inputs that no row lights only decay, and
    # reach the subnormal range within the run. Flushed, they are zero; every parameter above 1e-30 in magnitude
    # (anything that can move a bound) is the same bit for bit.
    torch.manual_seed(0)
    rows, lit, dark = 2000, 16, 48
    data = torch.zeros(rows, lit + dark)
    data[:, :lit] = (torch.rand(rows, lit) < 0.4).float()
    config = TrainConfig(step_size=0.02, batch_size=20, max_samples=40_000, first_eval=10**9, eval_subset=50)

    def run() -> dict:
        model = VAE(ModelConfig(data_dim=lit + dark, latent_dim=2, hidden_units=8))
        Trainer(model, data, config, threads=1).fit()
        return {name: value.detach().clone() for name, value in model.state_dict().items()}

    flushed = run()
    monkeypatch.setenv("AEVB_FLUSH_SUBNORMALS", "0")
    kept = run()

    tiny = torch.finfo(torch.float32).tiny
    assert sum(int(((value != 0) & (value.abs() < tiny)).sum()) for value in kept.values()) > 0
    assert all(int(((value != 0) & (value.abs() < tiny)).sum()) == 0 for value in flushed.values())
    for name, value in kept.items():
        visible = (value.abs() >= 1e-30) | (flushed[name].abs() >= 1e-30)
        assert torch.equal(value[visible], flushed[name][visible]), name
