"""Several processes (torchrun, gloo on CPU) train the same model as one process (aevb.training.distributed).

Every process draws the whole minibatch's permutation, binarisation and ε noise and keeps its
shard, and the shards' gradients are summed with weights rows / M, so two processes must give the
parameters of one process up to float rounding. A small step size keeps the comparison exact:
with Adagrad at 0.1 this tiny model's dynamics amplify rounding (one process on one thread and on
two threads then differ as much), which says nothing about the distribution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from aevb.cli import main

SETTINGS = [
    "--latent-dim",
    "3",
    "--hidden-units",
    "24",
    "--eval-subset",
    "200",
    "--no-progress",
    "--threads",
    "1",
    "--step-size",
    "0.01",
    "--seed",
    "7",
    "--evals-per-decade",
    "1",
]


def _parameters(run_dir):
    (path,) = run_dir.glob("*.safetensors")
    return load_file(path)


def _torchrun(args, tmp_path, processes=2):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "aevb.cli",
        "train",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize(
    "options",
    [
        # fused engine; dynamic binarisation; L = 2; M = 15 splits 8 + 7 (unequal shards); a partial last batch
        [
            "--engine",
            "fused",
            "--binarize",
            "dynamic",
            "--samples-per-datapoint",
            "2",
            "--batch-size",
            "15",
            "--max-samples",
            "3000",
        ],
        # autograd engine through DistributedDataParallel, estimator A
        ["--engine", "autograd", "--estimator", "A", "--max-samples", "3000"],
    ],
    ids=["fused", "autograd-ddp"],
)
def test_two_processes_train_what_one_process_trains(tmp_path, options):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *SETTINGS, *options, "--out", str(one)]) == 0
    _torchrun([*SETTINGS, *options, "--out", str(two)], tmp_path)
    expected, got = _parameters(one), _parameters(two)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=2e-5, msg=name)
    config = (two / "config.json").read_text()
    assert '"processes": 2' in config
    assert len((two / "metrics.jsonl").read_text().splitlines()) == len(
        (one / "metrics.jsonl").read_text().splitlines()
    )


def test_two_processes_refuse_a_baseline_with_one_line(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "aevb.cli",
        "train",
        *SETTINGS,
        "--algorithm",
        "wake-sleep",
        "--max-samples",
        "500",
        "--out",
        str(tmp_path / "ws"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "multi-process training runs AEVB only" in done.stderr
    assert "Traceback" not in done.stderr.split("multi-process")[0][-200:]


def test_sigterm_under_torchrun_checkpoints_and_resume_under_torchrun_is_exact(tmp_path):
    import signal
    import time

    options = [*SETTINGS, "--max-samples", "120000", "--checkpoint-every", "20"]
    _torchrun([*options, "--out", str(tmp_path / "reference")], tmp_path)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "aevb.cli"]
    agent = subprocess.Popen(
        [*launcher, "train", *options, "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    latest = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and agent.poll() is None:
        time.sleep(0.05)
    agent.send_signal(signal.SIGTERM)  # what torchrun does to its processes on Ctrl-C or a scheduler's stop
    _, stderr = agent.communicate(timeout=120)
    if (run / "summary.json").exists():
        pytest.skip("the run finished before the signal arrived")
    assert "checkpoint saved. Continue with: aevb train --resume" in stderr
    assert stderr.count("checkpoint saved") == 1  # said once, by rank 0
    _torchrun(["--resume", str(run), "--threads", "1", "--no-progress"], tmp_path)
    expected, got = _parameters(tmp_path / "reference"), _parameters(run)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_two_processes_stop_early_together_where_their_validation_bounds_say(tmp_path):
    # 100 training points overfit within a few thousand samples: the validation bound stalls. Every
    # process must stop after the same step (on rank 0's bound), or the others would wait forever.
    config = tmp_path / "overfit.json"
    config.write_text('{"data": {"train_limit": 100}, "training": {"first_eval": 500, "evals_per_decade": 10}}')
    options = ["--config", str(config), "--latent-dim", "5", "--hidden-units", "100", "--eval-subset", "300"]
    options += ["--batch-size", "20", "--step-size", "0.05", "--seed", "1", "--max-samples", "30000"]
    options += ["--early-stopping", "2", "--no-progress", "--threads", "1", "--out", str(tmp_path / "two")]
    _torchrun(options, tmp_path)
    run = tmp_path / "two"
    summary = json.loads((run / "summary.json").read_text())
    valid = [json.loads(line)["valid_bound"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(valid)), key=valid.__getitem__)
    assert summary["stopped_early_at"] is not None and summary["stopped_early_at"] < 30000
    assert len(valid) - 1 - best == 2  # stopped at the second point in a row without a higher bound
    assert json.loads((run / "best" / "best.json").read_text())["valid_bound"] == valid[best]


EXIT_SCRIPT = """
import atexit, os, torch, torch.distributed as dist
from aevb.training.distributed import from_environment

def say(text):  # one write, so the two processes' lines cannot interleave (torchrun runs python -u)
    os.write(1, (text + "\\n").encode())

def gloo_threads():
    return sum(open(f"/proc/self/task/{task}/comm").read().strip().startswith("pt_gloo") for task in os.listdir("/proc/self/task"))

# registered first, so it runs last of the exit handlers (atexit is last-in, first-out)
atexit.register(lambda: say(f"at exit: initialised {dist.is_initialized()}, gloo threads {gloo_threads()}"))
group = from_environment(torch.device("cpu"))
torch.optim.Adagrad([torch.zeros(3, requires_grad=True)], lr=0.01)  # (what every training run creates)
total = torch.ones(1)
dist.all_reduce(total)
say(f"sum {total.item():.0f} over {group.world_size}, gloo threads {gloo_threads()}")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_process_group_the_library_opened_is_gone_with_its_threads_before_the_interpreter_exits(tmp_path):
    # A gloo group alive when the interpreter finalises can abort the process (SIGABRT,
    # pytorch#190489) after a script that never called destroy_process_group has trained and saved
    # correctly; so can one that a stray reference keeps alive after destroy_process_group.
    script = tmp_path / "exits.py"
    script.write_text(EXIT_SCRIPT)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    running = [line for line in done.stdout.splitlines() if line.startswith("sum 2 over 2, gloo threads")]
    assert len(running) == 2 and all(not line.endswith(" 0") for line in running), done.stdout
    assert done.stdout.count("at exit: initialised False, gloo threads 0") == 2, done.stdout
