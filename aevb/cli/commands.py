"""What each ``aevb`` command does with its parsed options: train (or resume), evaluate, sample,
reproduce — through the library's run functions (:mod:`aevb.runs`, :mod:`aevb.experiments`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys

from ..errors import AevbError
from ..models.families import check_pair, default_estimator
from .flags import _flag
from .parser import _default


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _given(args: argparse.Namespace) -> dict:
    """The options the user gave (``aevb train`` leaves the others out: the library's defaults apply)."""
    return {key: value for key, value in vars(args).items() if key not in ("command", "argv")}


def _train(args: argparse.Namespace) -> int:
    from ..training.distributed import shutdown

    given = _given(args)
    _set_threads(given.get("threads"))
    try:
        run_dir = _resume(given) if "resume" in given else _new_run(args, given)
    finally:
        shutdown()   # under torchrun: leave the process group cleanly
    return 0 if run_dir is None else _report(run_dir)   # None: --print-config, nothing trained


#: What ``--resume`` takes besides the run: how to run it, never what to train (config.json says that).
RESUME_OPTIONS = ("resume", "device", "threads", "no_progress", "tensorboard", "loggers", "checkpoint_every")


def _resume(given: dict):
    from ..runs import resume_run

    ignored = [name for name in given if name not in RESUME_OPTIONS]
    if ignored:
        raise AevbError(f"--resume continues a run with the settings in its config.json; "
                        f"{', '.join(_flag('train', name) for name in ignored)} cannot change them (only --device, "
                        "--threads, --no-progress, --tensorboard, --logger and --checkpoint-every apply; start a new run "
                        "with --out to train otherwise)")
    options = {key: given[key] for key in ("device", "tensorboard", "loggers", "checkpoint_every", "threads")
               if key in given}
    return resume_run(given["resume"], progress=not given.get("no_progress", False),
                      report_every=_report_every(given), **options)


def _report_every(given: dict) -> float | None:
    """Progress lines wherever no bar is shown (stderr is no terminal, e.g. a log file, or --no-progress)."""
    from ..runs.progress_report import REPORT_EVERY_SECONDS

    return REPORT_EVERY_SECONDS if given.get("no_progress") or not sys.stderr.isatty() else None


def _settings_of_file(path: str) -> dict:
    """The settings of a JSON file shaped like a run's config.json, by their library names (the
    names the parsed options carry), checked as a run's config.json is."""
    import dataclasses

    from ..checkpoint import read_json
    from ..runs.data_config import data_config_of_run
    from ..runs.layout import algorithm_of
    from ..runs.train import run_configs

    config = read_json(path)
    if not isinstance(config, dict):
        raise AevbError(f"{path}: expected a JSON object shaped like a run's config.json")
    model_config, train_config = run_configs(config, path)
    data_config = data_config_of_run(config.get("data"), where=path)
    settings = {**dataclasses.asdict(data_config), **dataclasses.asdict(train_config)}
    # The data decide these; the run's own model fields are all kept.
    settings.update({key: value for key, value in dataclasses.asdict(model_config).items()
                     if key not in ("data_dim", "image_shape")})
    settings = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    settings["algorithm"] = algorithm_of(config, path)
    return settings


def _new_run(args: argparse.Namespace, given: dict):
    import dataclasses

    from ..models.vae import ModelConfig
    from ..runs import DataConfig, default_run_dir, train_run
    from ..training import TrainConfig

    flags = given
    if "config" in given:   # the file's settings, under the options given on the command line
        given = {**_settings_of_file(given["config"]), **{k: v for k, v in given.items() if k != "config"}}

    def pick(config: type) -> dict:
        names = {field.name for field in dataclasses.fields(config)}
        return {name: value for name, value in given.items() if name in names}

    train_options = pick(TrainConfig)
    model_options = pick(ModelConfig)
    for name in ("conditional", "latent_dim"):
        if name in given:
            model_options[name] = given[name]
    algorithm = given.get("algorithm", "aevb")
    units = model_options.get("hidden_units")
    layers = model_options.get("hidden_layers")   # None: the model takes one per width listed (ModelConfig checks it)
    if isinstance(units, tuple) and layers is not None and len(units) != layers:
        raise AevbError(f"--hidden-units lists {len(units)} widths but --hidden-layers is {layers}")
    if "conv_channels" in model_options and not isinstance(model_options["conv_channels"], tuple):
        model_options["conv_channels"] = (model_options["conv_channels"],)
    if model_options.get("log_variance_bound") == 0:
        model_options["log_variance_bound"] = None   # 0 on the command line: unbounded
    posterior = model_options.get("posterior", _default(ModelConfig, "posterior"))
    prior = model_options.get("prior", _default(ModelConfig, "prior"))
    check_pair(posterior, prior)   # before any note below: a refused pair is one line
    if "estimator" not in train_options and algorithm == "aevb":
        estimator = default_estimator(posterior, prior)
        if estimator != _default(TrainConfig, "estimator"):
            print(f"note: KL({posterior} || {prior}) has no closed form; training with estimator {estimator} "
                  "(eq. 6) instead of B", file=sys.stderr)
            train_options["estimator"] = estimator
    if "decoder_posterior_init_std" in flags and algorithm != "full-vb":
        raise AevbError("--posterior-init-std applies to --algorithm full-vb only")
    train_config = TrainConfig(**train_options)
    data_config = DataConfig(**{field.name: given[field.name] for field in dataclasses.fields(DataConfig)
                                if field.name in given})
    if given.get("print_config"):
        from ..runs import resolved_config

        print(json.dumps(resolved_config(data_config, model_options, train_config, algorithm), indent=2))
        return None
    out = given.get("out") or default_run_dir(data_config.dataset,
                                              model_options.get("latent_dim", _default(ModelConfig, "latent_dim")))
    args.out = str(out)   # for the message of an interrupted run
    run_options = {name: given[name] for name in ("device", "overwrite", "tensorboard", "loggers", "checkpoint_every",
                                                  "threads") if name in given}
    return train_run(out, data_config, model_options, train_config, progress=not given.get("no_progress", False),
                     algorithm=algorithm, command=shlex.join(["aevb", *args.argv]), report_every=_report_every(given),
                     **run_options)


def _report(run_dir) -> int:
    if os.environ.get("RANK", "0") != "0":   # one report per run, from rank 0
        return 0
    from ..checkpoint import read_json

    summary = read_json(run_dir / "summary.json")
    bounds = [f"{name} bound {summary[key]:.2f}" for name, key in (("train", "train_bound"), ("validation", "valid_bound"))
              if summary.get(key) is not None]
    print(f"run written to {run_dir}: {summary['samples']:,} samples in {summary['training_seconds']:.0f} s "
          f"({summary['samples_per_second']:,.0f} samples/s), step size {summary['step_size']}"
          + (f", {', '.join(bounds)} nats per datapoint" if bounds else " (this algorithm has no bound)"))
    return 0


#: Options of `aevb evaluate` that tune an estimate which only another option asks for.
EVALUATE_OPTION_NEEDS = {"k": "nll", "prior_mixture": "nll", "parameter_draws": "nll",
                         "hmc_samples": "hmc", "leapfrog_steps": "hmc"}


def _evaluate(args: argparse.Namespace) -> int:
    import inspect

    from ..evaluation.importance_sampling import PROTOCOL_SAMPLES
    from ..runs import evaluate_run

    given = _given(args)
    for option, needs in EVALUATE_OPTION_NEEDS.items():   # an option that would change nothing is a mistake
        if option in given and not given.get(needs):
            raise AevbError(f"--{option.replace('_', '-')} applies only with --{needs}")
    _set_threads(given.get("threads"))
    accepted = inspect.signature(evaluate_run).parameters
    options = {name: value for name, value in given.items() if name in accepted}
    options["progress"] = not given.get("no_progress", False)
    if given.get("nll"):
        options["log_likelihood_samples"] = given.get("k", PROTOCOL_SAMPLES)
    runs = given["run_dir"]
    listed = given.get("json") and len(runs) > 1   # a JSON list, one result a line, written as each finishes
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
                left = f"; not evaluated: {' '.join(map(str, runs[index + 1:]))}" if index + 1 < len(runs) else ""
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
            print("]", flush=True)   # what was printed stays one valid JSON list
    return 0


def _print_json(value) -> None:
    """One line of strict JSON: no NaN tokens, whatever the model gives."""
    from ..checkpoint import strict_json

    print(json.dumps(strict_json(value), allow_nan=False), flush=True)


def _print_evaluation(result: dict) -> None:
    split = result["split"]
    taken = (f"; the checkpoint at {result['checkpoint_samples']:,} training samples"
             if "checkpoint_samples" in result else "")
    points = result["num_datapoints"]
    print(f"{result['dataset']} {split} set, {points:,} point{'s' if points != 1 else ''}{taken}; nats per "
          "datapoint, ± one standard error")
    if result.get("encoder_trained", True):
        bound = result[f"{split}_bound"]
        spread = _error_bar(result[f"{split}_bound_stderr"], bound, "over datapoints",   # one datapoint: no spread
                            "one datapoint: no error over datapoints" if points == 1 else None)
        print(f"  lower bound (estimator {result['estimator']}, L = {result['samples_per_datapoint']}): "
              f"{bound:.3f} {spread}")
    else:
        print("  lower bound: none (the run trained no encoder); log p(x) by importance sampling uses the prior as "
              "proposal, the HMC estimator starts its chains at prior draws resampled by p(x|z)")
    if "decoder_parameter_kl" in result:
        print(f"  full VB: KL(q(θ) ‖ p(θ)) = {result['decoder_parameter_kl']:.1f} nats, "
              f"{result['decoder_parameter_kl_per_datapoint']:.3f} per training point"
              + (f"; full bound {result['train_full_bound']:.3f}" if "train_full_bound" in result else ""))
    if "log_likelihood" in result:
        what = "log p(x|y)" if result.get("conditional") else "log p(x)"   # a conditional VAE: given the label
        draws = f"{result['parameter_draws']} draws of θ × " if "parameter_draws" in result else ""
        error = _error_bar(result["log_likelihood_stderr"], result["log_likelihood"], "Monte Carlo",
                           # one sample per datapoint gives no spread to take it from
                           "no Monte Carlo error with k = 1" if result["log_likelihood_samples"] == 1 else None)
        print(f"  {what}, importance sampling, {draws}k = {result['log_likelihood_samples']}: {result['log_likelihood']:.3f} "
              f"{error}; negative log-likelihood "
              f"{-result['log_likelihood']:.3f}; {result['log_likelihood_seconds']:.1f} s")
    if "hmc_log_likelihood" in result:
        error = _error_bar(result["hmc_log_likelihood_stderr"], result["hmc_log_likelihood"], "Monte Carlo", None)
        print(f"  log p(x), HMC estimator (App. D), L = {result['hmc_samples']}: {result['hmc_log_likelihood']:.3f} "
              f"{error}; negative log-likelihood "
              f"{-result['hmc_log_likelihood']:.3f}; acceptance {result['hmc_acceptance']:.2f}; "
              f"{result['hmc_seconds']:.1f} s")




def _error_bar(stderr: float, value: float, kind: str, single: str | None) -> str:
    """"± stderr (kind)", or why there is none: ``single`` where one draw leaves no spread (one
    datapoint, k = 1), else that the estimate, or only its spread, is not finite."""
    if math.isfinite(stderr):
        return f"± {stderr:.3f} ({kind})"
    if single is not None:
        return f"({single})"
    if not math.isfinite(value):
        return f"(no standard error: the estimate is {value})"
    return "(no standard error: the spread overflows)"


def _compare(args: argparse.Namespace) -> int:
    from ..runs import compare_runs

    given = _given(args)
    rows = compare_runs(given["run_dir"], out=given.get("out"), overwrite=given.get("overwrite", False))
    if given.get("json"):
        _print_json(rows)
        return 0

    def number(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    def status(row) -> str:   # numbers that are not a finished run's final ones say so
        if row["status"] != "unfinished" or not row["planned_samples"]:
            return row["status"]
        return f"unfinished: {100 * (row['samples'] or 0) / row['planned_samples']:.0f}% of {row['planned_samples']:,}"

    width = max(len(row["label"]) for row in rows)
    print(f"{'run':<{width}}  {'samples':>12}  {'train':>9}  {'valid':>9}  {'test':>9}  status   "
          "(bounds: nats per datapoint)")
    for row in rows:
        samples = "-" if row["samples"] is None else f"{row['samples']:,}"
        print(f"{row['label']:<{width}}  {samples:>12}  {number(row['train_bound']):>9}  "
              f"{number(row['valid_bound']):>9}  {number(row['test_bound']):>9}  {status(row)}")
    if given.get("out"):
        print(f"wrote {given['out']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from ..runs import sample_run

    given = _given(args)
    options = {FLAG_NAMES.get(name, name): value for name, value in given.items() if name != "run_dir"}
    print(f"wrote {sample_run(given['run_dir'], **options)}")
    return 0


#: Options whose flag is not the library's name for them.
FLAG_NAMES = {"num": "num_samples"}


def _reproduce(args: argparse.Namespace) -> int:
    import time

    from ..experiments import reproduce

    given = _given(args)
    _set_threads(given.get("threads"))
    given["progress"] = not given.pop("no_progress", False)
    started = time.perf_counter()
    paths = reproduce(**given)
    print(f"{args.figure} reproduced in {time.perf_counter() - started:.0f} s: " + ", ".join(map(str, paths)))
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample, "reproduce": _reproduce,
            "compare": _compare}
