"""What each ``aevb`` command does with its parsed options: train (or resume), evaluate, sample,
reproduce — through the library's run functions (:mod:`aevb.runs`, :mod:`aevb.experiments`)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import shlex
import sys
import time
import warnings

import torch

from ..checkpoint import read_json, strict_json
from ..errors import AevbError
from ..evaluation.importance_sampling import PROTOCOL_SAMPLES
from ..experiments import reproduce
from ..runs import (
    RunOptions,
    RunSpec,
    compare_runs,
    default_run_dir,
    evaluate_run,
    export_run,
    progress_report,
    resolved_config,
    resume_run,
    sample_run,
    train_run,
)
from ..runs.config_file import config_text, read_config_file
from ..runs.spec import settings_of_run_config
from ..training.distributed import shutdown
from .flags import _flag


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _given(args: argparse.Namespace) -> dict:
    """The options the user gave (``aevb train`` leaves the others out: the library's defaults apply)."""
    return {key: value for key, value in vars(args).items() if key not in ("command", "argv")}


def _train(args: argparse.Namespace) -> int:
    given = _given(args)
    _set_threads(given.get("run.threads"))
    try:
        run_dir = _resume(given) if "resume" in given else _new_run(args, given)
    finally:
        shutdown()  # under torchrun: leave the process group cleanly
    return 0 if run_dir is None else _report(run_dir)  # None: --print-config, nothing trained


#: The options of ``aevb train`` that are no setting of the run's spec (:class:`aevb.runs.RunSpec`):
#: every other option's name is the setting's, ``section.name``.
NOT_SETTINGS = ("config", "print_config", "out", "overwrite", "resume")


def _settings(given: dict) -> dict:
    """The settings the options give, by section, as :meth:`aevb.runs.RunSpec.from_settings` takes them;
    progress lines wherever no bar is shown (stderr is no terminal, e.g. a log file, or --no-progress)."""
    settings: dict = {"run": {}}
    for key, value in given.items():
        if key in NOT_SETTINGS:
            continue
        section, _, name = key.rpartition(".")
        if section:
            settings.setdefault(section, {})[name] = value
        else:
            settings[name] = value
    if not settings["run"].get("progress", True) or not sys.stderr.isatty():
        settings["run"]["report_every"] = progress_report.REPORT_EVERY_SECONDS
    return settings


def _resume(given: dict):
    """``--resume``: the run's own settings, and only the options that say how it runs now."""
    extends = ("resume", "training.max_samples")  # (a larger budget extends the run)
    ignored = [name for name in given if name not in extends and not name.startswith("run.")]
    if ignored:
        allowed = ", ".join(
            _flag("train", field.name)
            for field in dataclasses.fields(RunOptions)
            if _flag("train", field.name).startswith("--")
        )
        raise AevbError(
            f"--resume continues a run with the settings in its config.json; "
            f"{', '.join(_flag('train', name) for name in ignored)} cannot change them (only {allowed} "
            "apply, and --max-samples to extend it; start a new run with --out to train otherwise)"
        )
    return resume_run(
        given["resume"], RunOptions(**_settings(given)["run"]), max_samples=given.get("training.max_samples")
    )


def _new_run(args: argparse.Namespace, given: dict):
    settings = _settings(given)
    if "config" in given:  # the file's settings, under the options given on the command line
        path = given["config"]
        from_file = settings_of_run_config(read_config_file(path), path)
        with warnings.catch_warnings():  # (said once, by the spec the run trains below)
            warnings.simplefilter("ignore")
            RunSpec.from_settings(from_file, where=path)  # the file's own mistakes, named in the file
        settings = {
            section: {**from_file.get(section, {}), **values} if isinstance(values, dict) else values
            for section, values in {**from_file, **settings}.items()
        }
    spec = RunSpec.from_settings(settings)
    if given.get("print_config"):
        print(config_text(resolved_config(spec), given["print_config"]), end="")
        return None
    out = given.get("out") or default_run_dir(spec.data.dataset, spec.model.latent_dim)
    args.out = str(out)  # for the message of an interrupted run
    return train_run(spec, out, overwrite=given.get("overwrite", False), command=shlex.join(["aevb", *args.argv]))


def _report(run_dir) -> int:
    if os.environ.get("RANK", "0") != "0":  # one report per run, from rank 0
        return 0
    summary = read_json(run_dir / "summary.json")
    bounds = [
        f"{name} bound {summary[key]:.2f}"
        for name, key in (("train", "train_bound"), ("validation", "valid_bound"))
        if summary.get(key) is not None
    ]
    print(
        f"run written to {run_dir}: {summary['samples']:,} samples in {summary['training_seconds']:.0f} s "
        f"({summary['samples_per_second']:,.0f} samples/s), step size {summary['step_size']}"
        + (f", {', '.join(bounds)} nats per datapoint" if bounds else " (this algorithm has no bound)")
        + (f"; {summary['stopped']} (best model: {run_dir / 'best'})" if summary.get("stopped_early_at") else "")
    )
    return 0


#: Options of `aevb evaluate` that tune an estimate which only another option asks for.
EVALUATE_OPTION_NEEDS = {
    "k": "nll",
    "prior_mixture": "nll",
    "parameter_draws": "nll",
    "hmc_samples": "hmc",
    "leapfrog_steps": "hmc",
}


def _evaluate(args: argparse.Namespace) -> int:
    given = _given(args)
    for option, needs in EVALUATE_OPTION_NEEDS.items():  # an option that would change nothing is a mistake
        if option in given and not given.get(needs):
            raise AevbError(f"--{option.replace('_', '-')} applies only with --{needs}")
    _set_threads(given.get("threads"))
    accepted = inspect.signature(evaluate_run).parameters
    options = {name: value for name, value in given.items() if name in accepted}
    options["progress"] = not given.get("no_progress", False)
    if given.get("nll"):
        options["log_likelihood_samples"] = given.get("k", PROTOCOL_SAMPLES)
    runs = given["run_dir"]
    listed = given.get("json") and len(runs) > 1  # a JSON list, one result a line, written as each finishes
    if listed:
        print("[", flush=True)
    try:
        for index, run_dir in enumerate(runs):
            # Each result is printed as soon as it is known: a later run that fails (or Ctrl-C) loses none.
            try:
                result = evaluate_run(**{**options, "run_dir": run_dir})
            except AevbError as error:
                if len(runs) == 1:
                    raise
                named = str(error) if str(run_dir) in str(error) else f"{run_dir}: {error}"
                left = f"; not evaluated: {' '.join(map(str, runs[index + 1 :]))}" if index + 1 < len(runs) else ""
                raise AevbError(named + left) from None
            if listed:
                print("," if index else " ", end="")
                _print_json(result)
            elif given.get("json"):
                _print_json(result)
            else:
                if len(runs) > 1:
                    print(run_dir)
                _print_evaluation(result)
                sys.stdout.flush()
    finally:
        if listed:
            print("]", flush=True)  # what was printed stays one valid JSON list
    return 0


def _print_json(value) -> None:
    """One line of strict JSON: no NaN tokens, whatever the model gives."""
    print(json.dumps(strict_json(value), allow_nan=False), flush=True)


def _print_evaluation(result: dict) -> None:
    split = result["split"]
    taken = (
        f"; the checkpoint at {result['checkpoint_samples']:,} training samples"
        if "checkpoint_samples" in result
        else f"; the best model by validation bound, at {result['best_samples']:,} training samples"
        if "best_samples" in result
        else ""
    )
    points = result["num_datapoints"]
    print(
        f"{result['dataset']} {split} set, {points:,} point{'s' if points != 1 else ''}{taken}; nats per "
        "datapoint, ± one standard error"
    )
    if result.get("encoder_trained", True):
        bound = result[f"{split}_bound"]
        spread = _error_bar(
            result[f"{split}_bound_stderr"],
            bound,
            "over datapoints",  # one datapoint: no spread
            "one datapoint: no error over datapoints" if points == 1 else None,
        )
        print(
            f"  lower bound (estimator {result['estimator']}, L = {result['samples_per_datapoint']}): "
            f"{bound:.3f} {spread}"
        )
    else:
        print(
            "  lower bound: none (the run trained no encoder); log p(x) by importance sampling uses the prior as "
            "proposal, the HMC estimator starts its chains at prior draws resampled by p(x|z)"
        )
    if "decoder_parameter_kl" in result:
        print(
            f"  full VB: KL(q(θ) ‖ p(θ)) = {result['decoder_parameter_kl']:.1f} nats, "
            f"{result['decoder_parameter_kl_per_datapoint']:.3f} per training point"
            + (f"; full bound {result['train_full_bound']:.3f}" if "train_full_bound" in result else "")
        )
    if "log_likelihood" in result:
        what = "log p(x|y)" if result.get("conditional") else "log p(x)"  # a conditional VAE: given the label
        draws = f"{result['parameter_draws']} draws of θ × " if "parameter_draws" in result else ""
        error = _error_bar(
            result["log_likelihood_stderr"],
            result["log_likelihood"],
            "Monte Carlo",
            # one sample per datapoint gives no spread to take it from
            "no Monte Carlo error with k = 1" if result["log_likelihood_samples"] == 1 else None,
        )
        print(
            f"  {what}, importance sampling, {draws}k = {result['log_likelihood_samples']}: {result['log_likelihood']:.3f} "
            f"{error}; negative log-likelihood "
            f"{-result['log_likelihood']:.3f}; {result['log_likelihood_seconds']:.1f} s"
        )
    if "hmc_log_likelihood" in result:
        error = _error_bar(result["hmc_log_likelihood_stderr"], result["hmc_log_likelihood"], "Monte Carlo", None)
        print(
            f"  log p(x), HMC estimator (App. D), L = {result['hmc_samples']}: {result['hmc_log_likelihood']:.3f} "
            f"{error}; negative log-likelihood "
            f"{-result['hmc_log_likelihood']:.3f}; acceptance {result['hmc_acceptance']:.2f}; "
            f"{result['hmc_seconds']:.1f} s"
        )


def _error_bar(stderr: float, value: float, kind: str, single: str | None) -> str:
    """ "± stderr (kind)", or why there is none: ``single`` where one draw leaves no spread (one
    datapoint, k = 1), else that the estimate, or only its spread, is not finite."""
    if math.isfinite(stderr):
        return f"± {stderr:.3f} ({kind})"
    if single is not None:
        return f"({single})"
    if not math.isfinite(value):
        return f"(no standard error: the estimate is {value})"
    return "(no standard error: the spread overflows)"


def _compare(args: argparse.Namespace) -> int:
    given = _given(args)
    rows = compare_runs(given["run_dir"], out=given.get("out"), overwrite=given.get("overwrite", False))
    if given.get("json"):
        _print_json(rows)
        return 0

    def number(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def status(row) -> str:  # numbers that are not a finished run's final ones say so
        if row["status"] != "unfinished" or not row["planned_samples"]:
            return row["status"]
        return f"unfinished: {100 * (row['samples'] or 0) / row['planned_samples']:.0f}% of {row['planned_samples']:,}"

    width = max(len(row["label"]) for row in rows)
    print(
        f"{'run':<{width}}  {'samples':>12}  {'train':>9}  {'valid':>9}  {'test':>9}  {'log p(x)':>9}  status   "
        "(bounds, test log p(x) kept by aevb evaluate --nll: nats per datapoint)"
    )
    for row in rows:
        samples = "-" if row["samples"] is None else f"{row['samples']:,}"
        print(
            f"{row['label']:<{width}}  {samples:>12}  {number(row['train_bound']):>9}  "
            f"{number(row['valid_bound']):>9}  {number(row['test_bound']):>9}  "
            f"{number(row['test_log_likelihood']):>9}  {status(row)}"
        )
    if given.get("out"):
        print(f"wrote {given['out']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    given = _given(args)
    options = {FLAG_NAMES.get(name, name): value for name, value in given.items() if name != "run_dir"}
    print(f"wrote {sample_run(given['run_dir'], **options)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    given = _given(args)
    print(f"wrote {export_run(given.pop('run_dir'), **given)}")
    return 0


#: Options whose flag is not the library's name for them.
FLAG_NAMES = {"num": "num_samples"}


def _reproduce(args: argparse.Namespace) -> int:
    given = _given(args)
    _set_threads(given.get("threads"))
    given["progress"] = not given.pop("no_progress", False)
    started = time.perf_counter()
    paths = reproduce(**given, command=shlex.join(["aevb", *args.argv]))
    print(f"{args.figure} reproduced in {time.perf_counter() - started:.0f} s: " + ", ".join(map(str, paths)))
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "sample": _sample,
    "reproduce": _reproduce,
    "compare": _compare,
    "export": _export,
}
