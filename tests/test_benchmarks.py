"""The benchmark suite runs end to end and writes its stable JSON (timings themselves are not
tested: these machines are shared and noisy)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS...``, its output captured."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600
    )


def test_bench_runs_every_peer_and_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--rounds",
            "2",
            "--threads",
            "1",
            "--models",
            "mnist",
            "--train-samples",
            "500",
            "--nll-points",
            "2",
            "--nll-samples",
            "50",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "aevb-bench/1"
    keys = [peer["key"] for peer in report["peers"]]
    assert keys == ["aevb", "aevb-autograd", "plain", "gemm"]
    for peer in report["peers"]:
        assert len(peer["train"]["values"]) == 2 and all(v > 0 for v in peer["train"]["values"])
        assert peer["peak_rss_mb"] > report["torch_import_rss_mb"] * 0.5
    aevb = report["peers"][0]
    # the engine auto chose, as summary.json names it: hand-derived (native kernels where they build)
    assert aevb["name"].endswith(("(fused, native kernels)", "(fused, torch operations)"))
    assert len(aevb["nll"]["values"]) == 2
    # every training repeat of aevb says which thread counts its steps ran at (the adaptive policy)
    details = aevb["train"]["details"]
    assert len(details) == 2 and all(sum(repeat["steps_by_threads"].values()) > 0 for repeat in details)
    assert "details" not in report["peers"][2]["train"]  # the plain loop has none
    measured = {(r["measure"], r["peer"]) for r in report["ratios"]}
    assert ("train", "plain PyTorch loop") in measured and ("nll", "GEMM-only bound") in measured
    assert "ratios aevb / peer" in done.stdout and "peak memory" in done.stdout


def test_bench_times_burdas_model_with_its_minibatches_of_twenty(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--rounds",
            "1",
            "--threads",
            "1",
            "--models",
            "burda",
            "--train-samples",
            "200",
            "--nll-points",
            "2",
            "--nll-samples",
            "20",
            "--no-autograd",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [peer["key"] for peer in report["peers"]] == ["burda-aevb", "burda-plain", "burda-gemm"]
    assert report["settings"]["batch_sizes"] == {"burda": 20}
    assert "784-200-200-50" in done.stdout and "M = 20" in done.stdout
    assert {(r["measure"], r["peer"]) for r in report["ratios"]} >= {
        ("train", "plain PyTorch loop"),
        ("nll", "GEMM-only bound"),
    }


def test_the_gemm_bound_does_every_product_of_a_step_and_no_more():
    """Forward: one per layer; backward: a weight gradient per layer and an input gradient for
    every layer but the first — 11 products with one hidden layer each way, 17 with two."""
    sys.path.insert(0, str(BENCHMARKS / "peers"))
    import torch
    from common import MODELS
    from gemm_bound import training_products

    for name, layers in (("mnist", 4), ("burda", 6)):  # linear layers, encoder heads as one
        step = training_products(5, MODELS[name].hidden_units, MODELS[name])
        calls = []
        real_mm, real_addmm = torch.mm, torch.addmm
        try:
            torch.mm = lambda *a, **k: calls.append("mm") or real_mm(*a, **k)
            torch.addmm = lambda *a, **k: calls.append("addmm") or real_addmm(*a, **k)
            step()
        finally:
            torch.mm, torch.addmm = real_mm, real_addmm
        assert calls.count("addmm") == layers and calls.count("mm") == 2 * layers - 1, (name, calls)


def test_bench_times_frey_face_beside_mnist_when_its_file_is_found(tmp_path, shared_data):
    import os

    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--rounds",
            "1",
            "--threads",
            "1",
            "--no-autograd",
            "--train-samples",
            "300",
            "--nll-points",
            "2",
            "--nll-samples",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AEVB_DATA_DIR": str(shared_data)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    frey = [peer for peer in report["peers"] if peer["model"] == "frey"]
    assert [peer["key"] for peer in frey] == ["frey-aevb", "frey-plain", "frey-gemm"]
    assert all(peer["train"]["values"][0] > 0 and "nll" not in peer for peer in frey)
    assert {(r["model"], r["peer"]) for r in report["ratios"] if r["model"] == "frey"} == {
        ("frey", "plain PyTorch loop"),
        ("frey", "GEMM-only bound"),
    }
    assert "Frey Face 560-200-20" in done.stdout
    missing = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench.py"), "--models", "frey", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AEVB_DATA_DIR": str(tmp_path / "nothing-here")},
    )
    assert missing.returncode == 1 and "Frey Face left out" in missing.stderr and "no model to time" in missing.stderr


def test_training_flops_counts_the_products_of_a_step():
    sys.path.insert(0, str(BENCHMARKS / "peers"))
    from common import MODELS
    from gemm_bound import training_flops

    # 784-500-20: forward 784·500 + 500·40 + 20·500 + 500·784; backward twice that, less the data's gradient.
    forward = 784 * 500 + 500 * 40 + 20 * 500 + 500 * 784
    assert training_flops(1, 500, MODELS["mnist"]) == 2 * (3 * forward - 784 * 500)
    # Frey Face's decoder has two heads (mean and log-variance); M multiplies every product
    forward = 560 * 200 + 200 * 40 + 20 * 200 + 200 * 1120
    assert training_flops(100, 200, MODELS["frey"]) == 2 * 100 * (3 * forward - 560 * 200)


def test_the_step_profile_accounts_for_the_whole_step(tmp_path):
    done = run_benchmark(
        "profile_step.py",
        "--models",
        "mnist,burda",
        "--samples",
        "4000",
        "--threads",
        "1",
        "--nll",
        "--json",
        str(tmp_path / "profile.json"),
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "profile.json").read_text())
    assert record["machine"]["cpu"] and record["threads"] == 1
    assert [model["model"] for model in record["models"]] == ["mnist", "burda"]
    for model in record["models"]:
        parts = model["ms"]
        assert set(parts) >= {"matrix products", "optimiser", "likelihood and KL", "Python and the rest"}
        # the kinds of work add up to the step (cProfile's cost may push the measured ones above it)
        assert sum(parts.values()) >= 0.98 * model["step_ms"]
        assert parts["matrix products"] > 0 and parts["optimiser"] > 0 and parts["likelihood and KL"] > 0
        assert model["samples_per_second"] == pytest.approx(model["batch_size"] / (model["step_ms"] / 1e3))
        # the products alone, and the ceiling without Python
        assert model["gemm_bound_step_ms"] > 0 and model["gemm_bound_gflops"] > 0
        assert model["ratio_to_bound"] == pytest.approx(model["gemm_bound_step_ms"] / model["step_ms"])
        assert model["ceiling_without_python"] >= model["ratio_to_bound"]
    # importance sampling: the chunk, its products and kernels; the ceiling they leave
    assert [parts["model"] for parts in record["importance_sampling"]] == ["mnist", "burda"]
    for parts in record["importance_sampling"]:
        assert parts["rows"] == 100 * 100 and parts["products_ms"] > 0 and parts["kernels_ms"] > 0
        assert parts["ceiling"] == pytest.approx(parts["products_ms"] / (parts["products_ms"] + parts["kernels_ms"]))
        assert parts["ratio_to_bound"] == pytest.approx(parts["products_ms"] / parts["chunk_ms"])
        # one thread here (--threads 1): the bound's products run as the workers' do
        assert parts["threads"] == 1 and parts["products_speedup"] > 0
        assert parts["ceiling_against_bound"] == pytest.approx(parts["ceiling"] / parts["products_speedup"])
        assert parts["streams_speedup"] > 0 and parts["ceiling_with_shared_machine"] == pytest.approx(
            parts["ceiling"] * parts["streams_speedup"] / parts["products_speedup"]
        )
    assert f"mnist (M = 100), {record['models'][0]['engine']}, 1 threads" in done.stdout


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the check would run")
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no CUDA device" in done.stderr
    assert not out.exists()


def _spinners() -> list[int]:
    """Processes running the benchmark's busy loop."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"while True: pass" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_busy_machine_scenario_spins_one_core_and_adds_aevb_on_one_thread(tmp_path):
    before = set(_spinners())
    out = tmp_path / "busy.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench.py"),
            "--busy",
            "--rounds",
            "1",
            "--threads",
            "2",
            "--no-autograd",
            "--train-samples",
            "300",
            "--nll-points",
            "2",
            "--nll-samples",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["settings"]["busy"] is True and "one core kept busy" in done.stdout
    one_thread = next(peer for peer in report["peers"] if peer["key"] == "aevb-1-thread")
    assert one_thread["name"].endswith(" 1 thread") and one_thread["train"]["values"][0] > 0
    assert set(_spinners()) <= before  # the busy loop is gone with the benchmark


def test_protocol_speed_times_the_nll_runs_and_says_in_one_line_when_mnist_is_missing(tmp_path):
    script = str(BENCHMARKS / "protocol_speed.py")
    out = tmp_path / "speed.json"
    done = subprocess.run(
        [
            sys.executable,
            script,
            "--models",
            "iwae-vae",
            "--rounds",
            "1",
            "--samples",
            "100",
            "--dataset",
            "mnist-sample",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dataset"] == "mnist-sample" and report["threads"] == 1
    assert report["models"]["iwae-vae"]["median"] > 0 and "iwae-vae" in done.stdout
    missing = subprocess.run(
        [
            sys.executable,
            script,
            "--models",
            "iwae-vae",
            "--rounds",
            "1",
            "--samples",
            "100",
            "--data-dir",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "AEVB_DATA_DIR": ""},
    )
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protocol_speed:") and "does not exist" in lines[0], missing.stderr


@pytest.mark.filterwarnings("ignore::aevb.training.reporting.TrainingWarning")  # 40 samples learn nothing
def test_the_gpu_checks_protocol_timing_gives_each_full_schedules_hours(tmp_path):
    """Run on the CPU here (the GPU check itself needs CUDA); without MNIST's files it takes the
    embedded sample."""
    sys.path.insert(0, str(BENCHMARKS))
    from gpu_check import protocol_throughput

    from aevb.experiments.nll import IWAE_SAMPLES

    result = protocol_throughput(tmp_path / "no-data", samples=40, device="cpu")
    assert result["dataset"] == "mnist-sample"
    for name in ("iwae-vae", "iwae-k5", "iwae-k50"):
        rate = result[name]["samples_per_second"]
        assert rate > 0 and result[name]["full_schedule_hours"] == pytest.approx(IWAE_SAMPLES / rate / 3600)


def test_bf16_products_are_timed_with_the_step_ceiling_of_a_profile(tmp_path):
    profile = {
        "threads": 1,
        "models": [{"model": "frey", "share": {"matrix products": 0.5}, "steps_by_threads": {"1": 10}}],
    }
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    out = tmp_path / "precision.json"
    done = run_benchmark(
        "products_precision.py",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--seconds",
        "0.05",
        "--profile",
        str(tmp_path / "profile.json"),
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert isinstance(record["machine"]["cpu_flags"], list)
    by_model = {result["model"]: result for result in record["results"]}
    assert set(by_model) == {"mnist", "frey", "burda"}
    frey = by_model["frey"]
    assert frey["speedup"] == pytest.approx(frey["bfloat16_samples_per_second"] / frey["float32_samples_per_second"])
    # Amdahl: half the step made s times faster
    assert frey["step_ceiling"] == pytest.approx(1 / (0.5 + 0.5 / frey["speedup"]))
    assert "step_ceiling" not in by_model["mnist"]  # not in the profile


def test_bf16_mixed_trains_float32_and_bf16_from_one_seed_and_scores_in_float32(tmp_path, shared_data):
    out = tmp_path / "bf16.json"
    done = run_benchmark(
        "bf16_mixed.py",
        "--data-dir",
        str(shared_data),
        "--samples",
        "2000",
        "--models",
        "frey",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    results = {result["way"]: result for result in json.loads(out.read_text())["results"]}
    assert set(results) == {"float32", "float32-autograd", "bf16-mixed"}
    # the two float32 engines compute the same step from the same seed; their roundings differ, and
    # Adagrad's first steps (about lr·sign(g)) amplify that, so they agree closely but not exactly
    assert results["float32"]["test_bound"] == pytest.approx(results["float32-autograd"]["test_bound"], rel=0.02)
    assert results["bf16-mixed"]["engine"] == results["float32-autograd"]["engine"]
    assert all(math.isfinite(result["test_bound"]) for result in results.values())


def test_schedule_hours_scales_a_fraction_of_the_protocol_and_says_in_one_line_when_mnist_is_missing(
    tmp_path, shared_data
):
    out = tmp_path / "hours.json"
    common = ["--models", "iwae-vae", "--threads", "1", "--fraction", "0.0001", "--points", "10"]
    done = run_benchmark("schedule_hours.py", *common, "--data-dir", str(shared_data), "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["model"] == "iwae-vae" and run["threads"] == "1" and run["threads_recorded"] == 1
    assert set(run["steps_by_threads"]) == {"1"}  # a fixed count: every step on it
    assert run["budget_fraction"] == pytest.approx(1e-4, rel=1e-3) and run["evaluation_points"] == 10
    # the run's own seconds, scaled: training by the fraction, the test score by the test set's size
    assert run["full_training_hours"] == pytest.approx(run["training_seconds"] / run["budget_fraction"] / 3600)
    assert run["full_evaluation_hours"] == pytest.approx(run["evaluation_seconds"] * 1000 / 3600)
    assert run["full_schedule_hours"] == pytest.approx(run["full_training_hours"] + run["full_evaluation_hours"])
    missing = run_benchmark("schedule_hours.py", *common, "--data-dir", str(tmp_path / "nowhere"))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1 and lines[0].startswith("schedule_hours: iwae-vae"), lines
