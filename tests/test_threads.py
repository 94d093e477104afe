"""The thread policy of training and evaluation steps (aevb.threads): with a clock and a machine that the
test controls, the adaptive policy keeps the count that steps fastest, measures again when the
load changes, and a fixed count never moves."""

from __future__ import annotations

import pytest
import torch

from aevb import threads as policy
from aevb.chunk_workers import ChunkWorkers
from aevb.errors import AevbError
from aevb.models.vae import VAE, ModelConfig
from aevb.threads import StepThreads, candidate_counts
from aevb.training import TrainConfig, Trainer


class Machine:
    """A fake machine of ``threads`` cores: a step at ``count`` threads takes ``cost[count]`` seconds
    of its clock, while the cores that neither it nor ``others`` (another process's busy cores)
    use stay idle; the test changes ``cost`` and ``others`` to model another process taking a core."""

    def __init__(self, cost: dict[int, float], threads: int = 8):
        self.cost, self.now, self.threads, self.sets = dict(cost), 0.0, threads, []
        self.cores, self.others, self.idle = threads, 0, 0.0

    def clock(self) -> float:
        return self.now

    def idle_seconds(self) -> float:
        return self.idle

    def set_threads(self, count: int) -> None:
        self.threads = count
        self.sets.append(count)

    def get_threads(self) -> int:
        return self.threads

    def wait(self, seconds: float) -> None:
        """Time in which the policy's process runs no step (between two fits)."""
        self.now += seconds
        self.idle += max(0, self.cores - self.others) * seconds

    def step(self):
        seconds = self.cost[self.threads]
        self.now += seconds
        self.idle += max(0, self.cores - self.threads - self.others) * seconds
        return self.threads


_POLICIES: list[StepThreads] = []


@pytest.fixture(autouse=True)
def policies_stopped():
    """Each test's policies stopped at its end, as a trainer stops its own: start() flushes the
    process's subnormals (on the real threads, whatever the fake machine), and only stop() gives the
    mode back, which later tests of the process rely on."""
    yield
    while _POLICIES:
        _POLICIES.pop().stop()


def _policy(machine: Machine, counts) -> StepThreads:
    policy = StepThreads(
        tuple(counts),
        clock=machine.clock,
        set_threads=machine.set_threads,
        get_threads=machine.get_threads,
        idle_seconds=machine.idle_seconds,
    )
    _POLICIES.append(policy)
    return policy


def _started(cost: dict[int, float]) -> tuple[Machine, StepThreads]:
    """A two-core fake machine with ``cost`` per step, and the adaptive policy started on it."""
    machine = Machine(cost, threads=2)
    threads = _policy(machine, (2, 1))
    threads.start()
    return machine, threads


def _run(threads: StepThreads, machine: Machine, seconds: float) -> list[int]:
    """Steps for ``seconds`` of the machine's clock; the count each ran at."""
    ran, end = [], machine.now + seconds
    while machine.now < end:
        ran.append(threads.run(machine.step, 100))
    return ran


def test_candidates_are_the_most_one_fewer_and_halvings():
    assert candidate_counts(1) == (1,)
    assert candidate_counts(2) == (2, 1)
    assert candidate_counts(16) == (16, 15, 8, 4, 2, 1)
    assert candidate_counts(6) == (6, 5, 3, 1)
    with pytest.raises(AevbError, match="threads"):
        candidate_counts(0)


def test_adaptive_policy_keeps_the_fastest_count_and_gives_the_count_back():
    machine = Machine({2: 0.004, 1: 0.006}, threads=2)  # a quiet machine: two threads win
    threads = _policy(machine, (2, 1))
    threads.start()
    ran = _run(threads, machine, 30.0)
    assert threads.current == 2
    assert ran[-1] == 2
    assert ran.count(1) < 0.02 * len(ran)  # measuring the other count costs little
    assert threads.choices[0][0] == 2
    assert threads.choices[0][1] == pytest.approx({2: 100 / 0.004, 1: 100 / 0.006})
    assert sum(threads.steps_by_count.values()) == len(ran)
    threads.stop()
    assert machine.threads == 2


def test_adaptive_policy_moves_to_one_thread_when_a_core_is_taken_and_back_when_it_is_free():
    machine, threads = _started({2: 0.004, 1: 0.006})
    _run(threads, machine, 5.0)
    assert threads.current == 2
    machine.cost[2], machine.others = 0.020, 1  # another process holds a core: barriers stall
    ran = _run(threads, machine, 3.0)
    assert threads.current == 1
    # The slowdown is noticed within a watch window or two, not at the periodic re-check.
    switched = next(i for i, count in enumerate(ran) if count == 1 and all(c == 1 for c in ran[i : i + 50]))
    assert sum(0.020 if c == 2 else 0.006 for c in ran[:switched]) < 2.5 * policy.WATCH_SECONDS
    machine.cost[2], machine.others = 0.004, 0  # the other process ended
    _run(threads, machine, 3 * policy.RECHECK_SECONDS)
    assert threads.current == 2


def _moved_to_one_thread() -> tuple[Machine, StepThreads, int]:
    """A two-core machine on which another process took a core, once the policy chose one thread;
    and how many measurements that took."""
    machine, threads = _started({2: 0.004, 1: 0.006})
    machine.cost[2], machine.others = 0.020, 1
    _run(threads, machine, 5.0)
    assert threads.current == 1
    return machine, threads, len(threads.choices)


def test_while_no_core_is_idle_the_periodic_re_check_of_more_threads_is_skipped():
    # One core taken by another process for minutes: measuring two threads again every 10-60 s
    # would cost slow steps each time, and they cannot win while no core is idle.
    machine, threads, measured = _moved_to_one_thread()
    ran = _run(threads, machine, 300.0)
    assert set(ran) == {1} and len(threads.choices) == measured
    assert threads.skipped_rechecks >= 300.0 / policy.LONGEST_RECHECK_SECONDS
    machine.cost[2], machine.others = 0.004, 0  # a core is free again: the next re-check measures
    _run(threads, machine, 2 * policy.LONGEST_RECHECK_SECONDS)
    assert threads.current == 2


def test_the_core_a_process_leaves_idle_between_two_fits_is_not_a_free_core():
    machine, threads, measured = _moved_to_one_thread()
    threads.stop()
    machine.wait(30.0)  # a re-check falls due meanwhile
    threads.start()
    assert set(_run(threads, machine, 5.0)) == {1} and len(threads.choices) == measured
    assert threads.skipped_rechecks == 1


def test_a_machine_that_does_not_say_its_idle_time_is_re_checked_as_before():
    machine, threads = _started({2: 0.020, 1: 0.006})
    machine.others = 1
    threads._idle = lambda: None
    _run(threads, machine, 100.0)
    assert threads.current == 1 and len(threads.choices) >= 3 and threads.skipped_rechecks == 0


def test_the_machines_idle_time_is_read_where_the_system_says_it():
    first = policy.idle_cpu_seconds()
    if first is None:
        pytest.skip("no /proc/stat here")
    assert first >= 0 and policy.idle_cpu_seconds() >= first


def test_a_hopeless_candidate_is_dropped_after_two_steps():
    machine = Machine({2: 0.004, 1: 0.020}, threads=2)  # one thread five times slower
    threads = _policy(machine, (2, 1))
    threads.start()
    ran = _run(threads, machine, 1.0)
    assert ran.count(1) == policy.WARMUP_STEPS + 2 and threads.current == 2


def test_a_count_that_slows_down_but_stays_fastest_is_measured_again_once_not_every_window():
    machine, threads = _started({2: 0.004, 1: 0.008})
    _run(threads, machine, 1.0)
    machine.cost[2] = 0.007  # slower than measured, still the fastest
    _run(threads, machine, 9.0)
    assert threads.current == 2
    assert len(threads.choices) == 2  # the first choice, and one measurement after the slowdown


def test_a_lucky_measurement_is_corrected_within_seconds():
    machine, threads = _started({2: 0.004, 1: 0.006})
    while not threads.choices:  # two threads measured while the other process slept
        threads.run(machine.step, 100)
    assert threads.current == 2
    machine.cost[2] = 0.020
    _run(threads, machine, 2.5 * policy.WATCH_SECONDS)
    assert threads.current == 1  # not only at the re-check 10 s later


def test_a_count_that_is_barely_faster_does_not_replace_the_current_one():
    machine, threads = _started({2: 0.004, 1: 0.004 / (1 + policy.SWITCH_MARGIN / 2)})
    _run(threads, machine, 2.0)
    assert threads.current == 2


def test_re_checks_back_off_while_the_choice_holds():
    machine, threads = _started({2: 0.004, 1: 0.006})
    _run(threads, machine, 400.0)
    # A probe at 0 s, then 10, 20, 40, 60 s apart (the longest) and so on, every one keeping two threads.
    assert [count for count, _ in threads.choices] == [2] * len(threads.choices)
    assert 8 <= len(threads.choices) <= 10


def test_a_fixed_count_is_set_and_never_measured():
    machine = Machine({3: 0.05, 1: 0.001}, threads=8)
    threads = _policy(machine, (3,))
    threads.start()
    assert machine.threads == 3
    ran = _run(threads, machine, 20.0)
    assert set(ran) == {3} and threads.choices == []
    threads.stop()
    assert machine.threads == 8


def test_the_policy_of_a_run(monkeypatch):
    monkeypatch.setattr(policy, "available_cpus", lambda: 8)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert StepThreads.for_device(None, torch.device("cpu")).counts == (4, 3, 2, 1)
        assert StepThreads.for_device(2, torch.device("cpu")).counts == (2,)
        # torchrun's processes on one machine each keep their share of the CPUs
        assert StepThreads.for_device(None, torch.device("cpu"), local_processes=3).counts == (2,)
        assert StepThreads.for_device(None, torch.device("cuda")).counts == (4,)
        with pytest.raises(AevbError, match="`threads` must be a positive integer"):
            StepThreads.for_device(0, torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)


def test_trainer_runs_with_the_policy_and_reports_the_counts_used():
    previous = torch.get_num_threads()
    torch.manual_seed(0)
    data = (torch.rand(300, 12) < 0.3).float()
    model = VAE(ModelConfig(data_dim=12, latent_dim=2, hidden_units=8))
    config = TrainConfig(batch_size=20, step_size=0.02, max_samples=3000, first_eval=1000, eval_subset=50)
    result = Trainer(model, data, config, threads=2).fit()
    assert torch.get_num_threads() == previous  # given back after the run
    assert result.steps_by_threads == {2: 150}
    assert {m.threads for m in result.history} == {2}
    torch.set_num_threads(2)
    try:
        adaptive = Trainer(VAE(ModelConfig(data_dim=12, latent_dim=2, hidden_units=8)), data, config).fit()
    finally:
        torch.set_num_threads(previous)
    assert set(adaptive.steps_by_threads) <= {1, 2}
    assert sum(adaptive.steps_by_threads.values()) == 150
    assert adaptive.history[-1].threads in (1, 2)


@pytest.mark.parametrize("threads", [None, 1])
def test_a_run_records_its_thread_setting_and_the_counts_its_steps_ran_with(tmp_path, threads):
    import json

    from aevb.runs import ModelSpec, RunOptions, RunSpec, train_run

    spec = RunSpec(
        model=ModelSpec(latent_dim=2, hidden_units=8),
        training=TrainConfig(step_size=0.02, max_samples=3000, first_eval=1000, eval_subset=100),
        run=RunOptions(progress=False, threads=threads),
    )
    run = train_run(spec, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert config["threads"] == ("adaptive" if threads is None else 1)
    assert sum(summary["steps_by_threads"].values()) == 30
    assert all(line["threads"] >= 1 for line in metrics)
    if threads == 1:
        assert summary["steps_by_threads"] == {"1": 30}


# -- evaluation chunks on worker threads (ChunkWorkers) -----------------------------------------------


def test_chunk_workers_return_results_in_order_from_single_threaded_workers():
    import threading

    seen = []
    # the first two chunks wait for each other, so that two workers run them whatever the load
    # (on a busy machine one worker could otherwise take all forty before another starts)
    both_started = threading.Barrier(2, timeout=60)

    def task(index):
        if index < 2:
            both_started.wait()
        seen.append((threading.get_ident(), torch.get_num_threads()))
        torch.mm(torch.rand(64, 64), torch.rand(64, 64))  # the pool really runs torch work
        return index * index

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # (the tests run on one)
    try:
        results = list(ChunkWorkers(3).map(((index, lambda index=index: task(index)) for index in range(40))))
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(before)
    assert results == [(index, index * index) for index in range(40)]
    assert {threads for _, threads in seen} == {1}  # each chunk on one intra-op thread
    assert len({ident for ident, _ in seen}) > 1 and threading.get_ident() not in {ident for ident, _ in seen}


def test_chunk_workers_pass_on_a_task_error_and_give_the_threads_back():
    before = torch.get_num_threads()

    def tasks():
        for index in range(10):
            yield index, (lambda: 1 / 0) if index == 6 else (lambda: index)

    for count in (1, 2):
        with pytest.raises(ZeroDivisionError):
            list(ChunkWorkers(count).map(tasks()))
        assert torch.get_num_threads() == before
    with pytest.raises(AevbError, match="`threads` must be a positive integer"):
        ChunkWorkers(0)


@pytest.mark.parametrize("latent_dim, hidden", [(2, 7), (20, 500)])
def test_importance_sampling_gives_the_same_numbers_on_any_number_of_workers(latent_dim, hidden):
    # The fast path decodes chunks on worker threads; its noise is drawn in order, in the calling
    # thread, and every chunk runs on one intra-op thread: the estimates agree bit for bit.
    from aevb.evaluation.importance_sampling import estimate_log_likelihood

    torch.manual_seed(0)
    model = VAE(ModelConfig(data_dim=784, latent_dim=latent_dim, hidden_units=hidden, init_std=0.1))
    x = torch.bernoulli(torch.full((13, 784), 0.2))
    estimates = []
    for workers in (1, 2, 3):
        torch.manual_seed(1)
        estimates.append(estimate_log_likelihood(model, x, num_samples=300, max_rows=700, threads=workers))
    for estimate in estimates[1:]:
        assert torch.equal(estimate.per_datapoint, estimates[0].per_datapoint)
        assert torch.equal(estimate.per_datapoint_stderr, estimates[0].per_datapoint_stderr)
    torch.manual_seed(2)
    other = estimate_log_likelihood(model, x, num_samples=300, max_rows=700, threads=2)
    assert not torch.equal(other.per_datapoint, estimates[0].per_datapoint)  # the noise follows the seed
