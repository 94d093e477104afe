"""A run keeps what was measured on it (issue 30, item 3): every ``aevb evaluate`` of a finished run
is appended to its evaluations.jsonl, ``aevb compare`` shows the kept log p(x), and every result
names its run."""

from __future__ import annotations

import json
import shutil

from test_cli import run_cli

from aevb.runs import evaluate_run
from aevb.runs.evaluations import EVALUATIONS_FILE, latest_log_likelihood, read_evaluations


def test_every_evaluation_of_a_finished_run_is_kept_with_its_settings(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert read_evaluations(run) == [] and latest_log_likelihood(run) is None
    first = evaluate_run(run, num_samples=2, num_points=20, log_likelihood_samples=50, device="cpu", seed=1)
    code, out, err = run_cli(capsys, ["evaluate", run, "--nll", "--k", "80", "--num-points", "30", "--json"])
    assert code == 0, err
    second = json.loads(out)
    assert first["run"] == second["run"] == str(run)
    kept = read_evaluations(run)
    assert [entry["log_likelihood"] for entry in kept] == [first["log_likelihood"], second["log_likelihood"]]
    assert kept[1]["settings"] | {"seed": 0} == kept[1]["settings"]  # the CLI's default seed
    assert (kept[1]["settings"]["log_likelihood_samples"], kept[1]["num_datapoints"]) == (80, 30)
    assert kept[0]["settings"]["num_samples"] == 2 and kept[0]["seconds"] > 0 and kept[0]["aevb_version"]
    assert latest_log_likelihood(run)["log_likelihood"] == second["log_likelihood"]

    code, out, err = run_cli(capsys, ["compare", run, finished_run, "--json"])
    assert code == 0, err
    rows = json.loads(out)
    assert (rows[0]["test_log_likelihood"], rows[0]["test_log_likelihood_samples"]) == (second["log_likelihood"], 80)
    assert rows[1]["test_log_likelihood"] is None
    code, out, err = run_cli(capsys, ["compare", run])
    assert code == 0 and "log p(x)" in out.splitlines()[0] and f"{second['log_likelihood']:.2f}" in out, out


def test_a_bound_only_evaluation_is_kept_but_is_no_log_likelihood(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    evaluate_run(run, num_samples=2, num_points=10, device="cpu")
    assert len(read_evaluations(run)) == 1 and latest_log_likelihood(run) is None
    evaluate_run(run, num_samples=2, num_points=10, device="cpu", record=False)
    assert len(read_evaluations(run)) == 1


def test_an_evaluation_that_cannot_be_kept_is_still_given_and_says_so(finished_run, tmp_path, capsys, recwarn):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (tmp_path / "elsewhere").write_text("")
    (run / EVALUATIONS_FILE).symlink_to(tmp_path / "elsewhere")  # never followed
    code, out, err = run_cli(capsys, ["evaluate", run, "--num-points", "10", "--samples", "2", "--json"])
    assert code == 0 and json.loads(out)["num_datapoints"] == 10, err
    # (the command line shows the warning as one line "aevb: warning: ..."; pytest records it instead)
    assert [str(w.message) for w in recwarn if "was not kept" in str(w.message)], err
    assert (tmp_path / "elsewhere").read_text() == ""


def test_json_results_of_several_runs_name_each_run(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    code, out, err = run_cli(capsys, ["evaluate", finished_run, other, "--num-points", "5", "--samples", "2", "--json"])
    assert code == 0, err
    assert [result["run"] for result in json.loads(out)] == [str(finished_run), str(other)]
