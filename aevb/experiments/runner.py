"""Running the many training runs behind a figure: one run directory per curve, resumable.

A reproduction is a list of :class:`FigureRun`; each becomes ``OUT/<name>/``, a normal run
directory (see :mod:`aevb.runs`). A run whose ``summary.json`` exists is complete and is never
redone, and a run cut off midway continues from its newest checkpoint (exactly: see
:func:`aevb.runs.resume_run`), so a killed reproduction goes on where it stopped. A run made
with other settings (another budget or seed) is neither: it is refused, and kept.
Independent runs can go to several processes (``jobs``); each then gets cores / jobs threads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import AevbError, TrainingInterrupted
from ..progress import progress_bar
from ..runs import SUMMARY_FILE, DataConfig, ModelSpec, RunOptions, RunSpec, resolve_device, resume_run, train_run
from ..runs.data_config import load_data, stored_data_config
from ..runs.layout import CONFIG_FILE, flat_config, read_run_config
from ..runs.process import StopOnSignal, parent_asked_to_stop, stop_with_parent
from ..runs.progress_report import REPORT_EVERY_SECONDS, RunsProgress, report_periodically
from ..threads import process_share
from ..training import TrainConfig
from ..training.algorithms import make_algorithm
from ..training.checkpoints import has_checkpoint
from ..training.reporting import one_line_warnings
from ..training.step_size import fit_to_budget


@dataclass
class FigureRun:
    """One curve of a figure: a named training run."""

    name: str
    data: DataConfig
    model: ModelSpec
    train: TrainConfig
    algorithm: str = "aevb"
    track_test: bool = True
    # Called with (model, data) at every evaluation point; must be picklable for jobs > 1.
    extra_metrics: Callable | None = None
    tags: dict = field(default_factory=dict)  # what the figure needs to place the curve
    # A measurement of the finished run in the same process (picklable), e.g. a long log p(x)
    # estimate: ``final(run_dir, progress=...)`` writes its result into run_dir, ``final.done(run_dir)``
    # says it has.
    final: Callable | None = None
    # The command line that trains it, recorded in its config.json (and so on its model card).
    command: str | None = None


def is_complete(run_dir: Path) -> bool:
    return (run_dir / SUMMARY_FILE).is_file()


def is_finished(spec: FigureRun, run_dir: Path) -> bool:
    """Trained, and its final measurement (if any) written."""
    return is_complete(run_dir) and (spec.final is None or spec.final.done(run_dir))


def _resumable(spec: FigureRun, run_dir: Path) -> bool:
    """An interrupted run of this very spec (:func:`other_settings`) with a checkpoint."""
    return has_checkpoint(run_dir) and (run_dir / CONFIG_FILE).is_file() and not other_settings(spec, run_dir)


def _as_json(value):
    """``value`` as config.json holds it (tuples as lists), to compare with what was read from one."""
    return json.loads(json.dumps(value, default=str))


def other_settings(spec: FigureRun, run_dir: Path) -> list[str]:
    """The settings (``section.name``) in which the run that ``run_dir`` holds was made otherwise than
    ``spec`` asks, each with both values; empty where they agree or no run's config.json is there.
    Settings that only say where the data are or how the run was made are no difference, nor is a
    setting the run's config.json does not record (an older aevb)."""
    if not (run_dir / CONFIG_FILE).is_file():
        return []
    stored = flat_config(read_run_config(run_dir))
    size = stored.get("data.train_size")
    algorithm = make_algorithm(spec.algorithm, spec.train)
    train = fit_to_budget(spec.train, size, algorithm) if isinstance(size, int) and size > 0 else spec.train
    data = {
        name: value
        for name, value in stored_data_config(spec.data).items()
        if name not in ("data_dir", "download") and not (name == "pixel_divisor" and value is None)
    }
    # (None: the data decide, as they did for the stored run)
    model = {
        name: value for name, value in spec.model.to_dict().items() if name != "conditional" and value is not None
    } | dict(algorithm.model_options)
    planned = flat_config(
        _as_json({"algorithm": spec.algorithm, "data": data, "model": model, "training": train.to_dict()})
    )
    unused = settings_without_effect(planned)
    return [
        f"{name} {stored[name]!r}, not {value!r}"
        for name, value in planned.items()
        if name in stored and stored[name] != value and name not in unused
    ]


def settings_without_effect(planned: dict) -> set[str]:
    """The settings (``section.name``) that change nothing in a run with the others ``planned`` has,
    so that a run stored with other values of them (an older aevb's defaults) is still this run:
    the step-size selection's where the step size is given, σ of the normal initialisation where
    the initialisation is Glorot's."""
    unused = set()
    if planned.get("training.step_size") is not None:
        unused |= {"training.selection_steps", "training.selection_epochs", "training.step_size_candidates"}
    if planned.get("model.init") == "glorot":
        unused.add("model.init_std")
    return unused


def refuse_other_settings(specs: list[FigureRun], out: Path) -> None:
    """A one-line error when a run directory of ``specs`` in ``out`` holds a run made with other
    settings (another budget or seed, ...): it is neither reused as this spec's run nor replaced."""
    for spec in specs:
        differences = other_settings(spec, out / spec.name)
        if differences:
            raise AevbError(
                f"{out / spec.name} holds a run made with other settings ({'; '.join(differences)}); "
                f"choose another `out`, or delete {out / spec.name} to train it anew"
            )


def _run_one(
    spec: FigureRun, out: Path, device: str, threads: int | None, share: int | None = None, progress: bool = False
) -> str | None:
    """One run: ``threads`` fixes its CPU threads; None adapts among those of its ``share``. None
    when the parent asked every job to stop before this one started."""
    if parent_asked_to_stop():
        return None
    if share:  # a worker process of --jobs: its warnings say which run they are about
        torch.set_num_threads(share)
        with one_line_warnings(spec.name):
            return _train_and_measure(spec, out, device, threads, progress)
    return _train_and_measure(spec, out, device, threads, progress)


def _train_and_measure(spec: FigureRun, out: Path, device: str, threads: int | None, progress: bool) -> str:
    run_dir = out / spec.name
    if not is_complete(run_dir):  # (a complete run comes here only for its final measurement)
        options = RunOptions(device=device, threads=threads, progress=progress, track_test=spec.track_test)
        if _resumable(spec, run_dir):
            resume_run(run_dir, options, extra_metrics=spec.extra_metrics)
        else:
            train_run(
                RunSpec(spec.data, spec.model, spec.train, spec.algorithm, options),
                run_dir,
                overwrite=True,
                extra_metrics=spec.extra_metrics,
                command=spec.command or f"aevb reproduce ({spec.name})",
            )
    if spec.final is not None and not spec.final.done(run_dir):
        spec.final(run_dir, progress=progress)
    return spec.name


def run_specs(
    specs: list[FigureRun],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    device: str = "auto",
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
    progress: bool = False,
    threads: int | None = None,
    report_every: float = REPORT_EVERY_SECONDS,
) -> None:
    """Train every run in ``specs`` into ``out/<name>`` that is not complete yet, ``jobs`` at a
    time, each with its share of the CPUs; ``threads`` fixes each run's CPU threads (default: the
    adaptive policy of :mod:`aevb.threads` within the share). ``progress``: a
    bar over the runs with the time left (from the training samples done and to do, read from the
    runs' checkpoints as they train), and with one job each run's own training bar below it. Where
    no bar is shown, ``log`` gets a line per run started or done, and every ``report_every``
    seconds one with each run's progress, speed and time left (:mod:`aevb.runs.progress_report`)."""
    out = Path(out)
    refuse_other_settings(specs, out)  # before any run counts as complete or is trained
    pending = [spec for spec in specs if not is_finished(spec, out / spec.name)]
    done = len(specs) - len(pending)
    if done:
        log(f"{done} of {len(specs)} runs already complete in {out}; {len(pending)} to go")
    if not pending:
        return
    if jobs < 1:
        raise AevbError(f"`jobs` must be a positive integer, got {jobs}")
    resolve_device(device)  # a device no run can use: one line before anything is written
    # Data that cannot be found or read: one line now, not after the runs before it have trained
    # (once per data set, whatever part of it each run takes).
    read = set()
    for spec in pending:
        source = (spec.data.dataset, spec.data.data_dir, spec.data.download)
        if source not in read and not is_complete(out / spec.name):
            load_data(spec.data)
            read.add(source)
    out.mkdir(parents=True, exist_ok=True)
    # Progress counts training samples, so that the time left weighs long runs as they are.
    work = {spec.name: max(1, spec.train.max_samples or 1) for spec in pending}
    by_name = {spec.name: spec for spec in pending}
    runs = RunsProgress(
        work,
        out,
        scored=lambda name: is_finished(by_name[name], out / name),
        fresh={
            spec.name for spec in pending if not is_complete(out / spec.name) and not _resumable(spec, out / spec.name)
        },
    )
    already = runs.done()
    overall = progress_bar(
        sum(work.values()), unit="sample", desc=f"{len(pending)} runs", enabled=progress, position=0, initial=already
    )
    if overall.disable and already:  # resuming: where the runs stand
        log(runs.report())
    try:
        if jobs == 1 or len(pending) == 1:
            _run_serially(pending, out, device, threads, progress, runs, overall, log, report_every)
        else:
            _run_in_processes(pending, out, device, threads, jobs, runs, overall, log, report_every)
    finally:
        overall.close()


def _run_serially(
    pending: list[FigureRun],
    out: Path,
    device: str,
    threads: int | None,
    progress: bool,
    runs: RunsProgress,
    overall,
    log: Callable[[str], None],
    report_every: float,
) -> None:
    """:func:`run_specs` with one job: the runs train in this thread, one after another, while a
    reporter thread writes the progress lines."""
    with report_periodically(runs, log, report_every if overall.disable else None):
        for index, spec in enumerate(pending, 1):
            overall.set_description_str(f"run {index}/{len(pending)} {spec.name}")
            if overall.disable:  # no bar on screen: a line per run instead
                log(f"[{index}/{len(pending)}] {spec.name}")
            try:
                _run_one(spec, out, device, threads, progress=progress)
            except TrainingInterrupted as stop:  # said with the run's name
                raise TrainingInterrupted(stop.samples, stop.signal, {spec.name: stop.samples}) from None
            overall.update(max(0, runs.done() - overall.n))


def _run_in_processes(
    pending: list[FigureRun],
    out: Path,
    device: str,
    threads: int | None,
    jobs: int,
    runs: RunsProgress,
    overall,
    log: Callable[[str], None],
    report_every: float,
) -> None:
    """:func:`run_specs` with several jobs: one process each, with its share of the CPUs."""
    share = process_share(jobs)
    # spawn, not fork: a forked child of a process that has used OpenMP threads can deadlock.
    # Ctrl-C reaches every job, and each stops after a checkpoint; a job that fails asks the others
    # to stop too. Either way no queued run starts (the event, the cancelled futures); meanwhile
    # this process waits for the running ones (a second Ctrl-C is not caught), then names every
    # run that stopped, or raises the failure.
    context = multiprocessing.get_context("spawn")
    stop_all = context.Event()
    failure: BaseException | None = None
    with (
        StopOnSignal() as signalled,
        ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=stop_with_parent, initargs=(stop_all,)
        ) as pool,
    ):
        futures = {pool.submit(_run_one, spec, out, device, threads, share): spec for spec in pending}
        stopped: dict[str, TrainingInterrupted] = {}
        running, finished_count, next_report = set(futures), 0, time.monotonic() + report_every

        def stop_every_job() -> None:  # queued runs never start; running ones stop at a checkpoint
            stop_all.set()
            for future in futures:
                future.cancel()  # (a no-op for a future already running or done)

        try:
            while running:
                # Wake every few seconds to move the bar (or, in a log, every report_every to report).
                ended, running = wait(running, timeout=min(2.0, report_every), return_when=FIRST_COMPLETED)
                for future in ended:
                    try:
                        name = future.result()
                    except TrainingInterrupted as stop:
                        stopped[futures[future].name] = stop
                        continue
                    except CancelledError:
                        continue
                    except Exception as error:  # the first failure is the one to report
                        failure = failure or error
                        continue
                    if name is None:
                        continue
                    finished_count += 1
                    if overall.disable:
                        log(f"[{finished_count}/{len(pending)}] {name} done")
                if (signalled() or failure is not None) and not stop_all.is_set():
                    stop_every_job()
                if not overall.disable:
                    overall.update(max(0, runs.done() - overall.n))
                elif running and time.monotonic() >= next_report:
                    log(runs.report())
                    next_report = time.monotonic() + report_every
        finally:  # however the wait ends (a second Ctrl-C too)
            stop_every_job()
    if failure is not None:
        raise failure
    if stopped:
        first = next(iter(stopped.values()))
        # The signal this process received (jobs stopped at its request received none of their own).
        raise TrainingInterrupted(
            first.samples,
            signalled.received if signalled() else first.signal,
            {spec.name: stopped[spec.name].samples for spec in pending if spec.name in stopped},
        )
    if signalled():  # stopped before any run had trained a step
        raise TrainingInterrupted(0, signalled.received)


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / SUMMARY_FILE).read_text())
