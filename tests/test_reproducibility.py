"""A run under the default (adaptive) thread policy repeats and resumes bit for bit, whatever
counts the policy chooses as the machine's load changes (issue 28, item 1).

The model of these tests shows both ways a count used to change a result: a Gaussian decoder on
an epoch whose last minibatch has 65 rows (torch's elementwise operations then split a tensor
unevenly among threads, and their vectorised and scalar code round exp and tanh differently),
and a latent layer of 5 (MKL splits the 10 × 200 weight gradient of the encoder's heads over the
minibatch unless its strict reproducible mode is on)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from aevb import VAE, ModelConfig, native
from aevb.threads import StepThreads, available_cpus, strict_matrix_products
from aevb.training import TrainConfig, Trainer

needs_kernels = pytest.mark.skipif(native.load() is None, reason="native kernels could not be built here")


def _data() -> torch.Tensor:
    return torch.rand(365, 560, generator=torch.Generator().manual_seed(2))  # minibatches 100, 100, 100, 65


def _fit(monkeypatch, count_of_step=None, threads=None, engine="auto", estimator="B"):
    """Trains the model with ``threads``, or under the adaptive policy with its choice at each step
    forced to ``count_of_step(step number)`` (as a changing load could make it); returns the
    trained state dict, the evaluated bounds and the counts the steps ran with."""
    if count_of_step is not None:
        numbers = iter(range(10**9))

        def run(self, step, samples):
            if self.adaptive:
                self.current = count_of_step(next(numbers))
                self._set(self.current)
            self.steps_by_count[self.current] = self.steps_by_count.get(self.current, 0) + 1
            return step()

        monkeypatch.setattr(StepThreads, "run", run)
    if estimator == "IWAE":  # Bernoulli, whose early log-weights are close: their softmax rounds in every bit
        model = VAE(ModelConfig(data_dim=560, latent_dim=5, hidden_units=200))
    else:
        model = VAE(ModelConfig(data_dim=560, latent_dim=5, hidden_units=200, likelihood="gaussian", sigmoid_mean=True))
    config = TrainConfig(
        max_samples=4000,
        step_size=0.02,
        seed=3,
        first_eval=1000,
        evals_per_decade=4,
        engine=engine,
        estimator=estimator,
        num_samples=5 if estimator == "IWAE" else 1,
        batch_size=20 if estimator == "IWAE" else 100,  # Burda et al.'s: log-weights of 5 × 20
    )
    outside = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        data = _data() if estimator != "IWAE" else (_data() < 0.3).float()
        result = Trainer(model, data, config, valid=data[:65], threads=threads).fit()
    finally:
        torch.set_num_threads(outside)
        monkeypatch.undo()
    bounds = [(m.train_bound, m.valid_bound, m.minibatch_bound) for m in result.history]
    return model.state_dict(), bounds, result.steps_by_threads


def _assert_same(first, second):
    (state, bounds, _), (other_state, other_bounds, _) = first, second
    assert bounds == other_bounds
    for name, value in state.items():
        assert torch.equal(value, other_state[name]), name


def test_the_matrix_products_are_in_strict_reproducible_mode():
    """aevb's import put MKL in strict CNR mode before its first call (the torch build of CI has MKL)."""
    if not torch.backends.mkl.is_available():
        pytest.skip("torch without MKL")
    assert strict_matrix_products()
    a, b = torch.randn(10, 100), torch.randn(100, 200)
    outside = torch.get_num_threads()
    try:
        products = []
        for count in (1, 2):
            torch.set_num_threads(count)
            products.append(a @ b)
    finally:
        torch.set_num_threads(outside)
    assert torch.equal(*products)


@needs_kernels
@pytest.mark.parametrize("estimator", ["B", "IWAE"])
def test_the_adaptive_policy_changes_no_bit_of_a_run(monkeypatch, estimator):
    """Counts changing at every step, at every third, and never: the same weights and bounds
    (IWAE: its weights are a softmax over the samples, which torch splits among threads)."""
    if not strict_matrix_products():
        pytest.skip("matrix products without MKL's strict mode: the policy keeps one count")
    alternating = _fit(monkeypatch, lambda step: 1 + step % 2, estimator=estimator)
    assert set(alternating[2]) == {1, 2}
    _assert_same(alternating, _fit(monkeypatch, lambda step: 2 if step % 3 else 1, estimator=estimator))
    _assert_same(alternating, _fit(monkeypatch, threads=1, estimator=estimator))
    _assert_same(alternating, _fit(monkeypatch, threads=2, estimator=estimator))


def test_an_engine_whose_steps_depend_on_the_count_is_not_adapted(monkeypatch):
    """torch's own operations (the fused engine) round differently on other counts: the policy
    keeps one count, so the run still repeats bit for bit."""
    policy_counts = []
    run = _fit(monkeypatch, lambda step: policy_counts.append(step) or 1 + step % 2, engine="fused")
    assert policy_counts == [] and set(run[2]) == {2}  # the policy never chose: one count, the most
    _assert_same(run, _fit(monkeypatch, threads=2, engine="fused"))


def test_a_fixed_policy_is_not_made_adaptive():
    policy = StepThreads((2,))
    policy.adapt_only_if(True)
    assert policy.counts == (2,)
    adaptive = StepThreads((2, 1))
    adaptive.adapt_only_if(False)
    assert adaptive.counts == (2,) and not adaptive.adaptive and adaptive.current == 2


# -- the command line, while another process takes a core part of the time -------------------------

ARGS = [
    "--dataset",
    None,
    "--likelihood",
    "gaussian",
    "--sigmoid-mean",
    "--hidden-units",
    "200",
    "--latent-dim",
    "5",
    "--max-samples",
    "30000",
    "--seed",
    "7",
    "--checkpoint-every",
    "40",
    "--no-progress",
]


def _cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "aevb.cli", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _digest(run) -> str:
    return hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()


@needs_kernels
@pytest.mark.skipif(available_cpus() < 2, reason="needs two CPUs for the policy to choose between")
def test_default_runs_repeat_and_resume_bit_for_bit_while_a_core_is_busy_part_of_the_time(tmp_path):
    data = tmp_path / "faces.npy"
    np.save(data, np.random.default_rng(0).random((1565, 560), dtype=np.float32))  # Frey Face's shape
    args = list(ARGS)
    args[1] = str(data)
    spinner = None

    def busy_for(seconds: float):  # a plain process on one core, started now, stopped after `seconds`
        return subprocess.Popen(
            [sys.executable, "-c", f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"]
        )

    try:
        runs = []
        for name in ("first", "second"):
            spinner = busy_for(3.0)
            process = _cli(*args, "--out", str(tmp_path / name))
            assert process.wait(timeout=600) == 0, process.stderr.read()
            spinner.wait()
            runs.append(tmp_path / name)
        assert _digest(runs[0]) == _digest(runs[1])
        assert (runs[0] / "metrics.jsonl").read_text().splitlines()[-1].split('"seconds"')[0] == (
            runs[1] / "metrics.jsonl"
        ).read_text().splitlines()[-1].split('"seconds"')[0]

        killed = tmp_path / "killed"
        spinner = busy_for(2.0)
        process = _cli(*args, "--out", str(killed))
        latest = killed / "checkpoints" / "latest.json"
        deadline = time.time() + 300
        while not latest.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        spinner.wait()
        spinner = busy_for(2.0)
        process = _cli("--resume", str(killed), "--no-progress")
        assert process.wait(timeout=600) == 0, process.stderr.read()
        assert _digest(killed) == _digest(runs[0])
    finally:
        if spinner is not None and spinner.poll() is None:
            spinner.kill()
