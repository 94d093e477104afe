"""Ship the models behind published numbers as small loadable directories in ``models/`` and
score each one again, so that anyone can re-score them (issue 31).

Each run is written out as ``aevb export RUN --format hub`` writes it (model.safetensors,
model.json with the run's data, training settings and bounds, config.json and a model card;
no pickle), then scored by the commands a reader would run, and the outputs are collected in
``models/scores.json``:

* ``aevb evaluate DIR --samples 1 --json``: the test bound with one z per image, as Figure 2 draws
  it (seconds; ``tests/test_shipped_models.py`` runs it again and expects the same number);
* for the log-likelihood protocol's models, ``aevb evaluate DIR --nll --json``: test log p(x) by
  importance sampling with k = 5000 on the 10,000 test images, the table's number (minutes), and
  the same with k = 100 on the first 100 images, which the test runs again (seconds).

    python scripts/ship_models.py --data-dir ../shared/data --fig2 reproduce/fig2 --nll reproduce/nll

A protocol model is named by its table's budget: ``nll-iwae-vae`` from ``--budget 1``,
``nll-iwae-vae-budget-0.25`` from ``--budget 0.25``. A run that is not there (or not finished) is
left out and said so; models already in ``models/`` and ``scores.json`` entries for runs not
given are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from aevb.experiments.nll import TABLE_FILE

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SCORES = MODELS / "scores.json"

#: shipped name → (which option's directory, the run in it); the protocol's models (``nll``) are
#: scored by its log p(x) and named with their table's budget where it is not the full schedule
SHIPPED = {
    "fig2-mnist-z20": ("fig2", "mnist-z20-aevb"),
    "fig2-frey-z20": ("fig2", "frey-z20-aevb"),
    "nll-iwae-vae": ("nll", "iwae-vae"),
    "nll-iwae-k5": ("nll", "iwae-k5"),
}
#: the quick re-score the tests repeat: importance samples per image, first test images
QUICK_NLL = {"k": 100, "num_points": 100}


def aevb(*arguments: str) -> str:
    # From the repository's root, so that a model card's usage lines name models/NAME, not this machine's path.
    done = subprocess.run([sys.executable, "-m", "aevb", *arguments], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"aevb {' '.join(arguments)} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the directory holding mnist/ and frey/")
    parser.add_argument("--fig2", type=Path, help="the output directory of `aevb reproduce fig2`")
    parser.add_argument("--nll", type=Path, help="the output directory of `aevb reproduce nll`")
    parser.add_argument("--only", nargs="*", choices=tuple(SHIPPED), help="only these models")
    args = parser.parse_args()
    scores = json.loads(SCORES.read_text()) if SCORES.exists() else {}
    common = ["--json", "--no-progress", "--data-dir", str(Path(args.data_dir).resolve()), "--threads", "1"]
    for key in args.only or SHIPPED:
        source, run_name = SHIPPED[key]
        directory = getattr(args, source)
        run = directory.resolve() / run_name if directory is not None else None
        if run is None or not (run / "model.safetensors").exists():
            print(f"{key}: no finished run {run_name} (--{source}): left out")
            continue
        name, command = key, f"aevb reproduce {source}"
        if source == "nll":
            table = directory / TABLE_FILE
            if not table.is_file():
                raise SystemExit(f"{table} is missing: run aevb reproduce nll on {directory} to its end first")
            budget = json.loads(table.read_text())["budget"]
            name += "" if budget == 1 else f"-budget-{budget:g}"
            command += f" --budget {budget:g}"
        out = MODELS / name
        aevb("export", str(run), "--format", "hub", "--out", f"models/{name}", "--overwrite")
        entry = {"run": run_name, "from": command}
        one_sample = json.loads(aevb("evaluate", str(out), "--samples", "1", *common))
        entry["test_bound_one_sample"] = one_sample["test_bound"]
        entry["test_bound_one_sample_stderr"] = one_sample["test_bound_stderr"]
        entry["rescore_bound"] = f"aevb evaluate models/{name} --samples 1 --data-dir DATA_DIR"
        if source == "nll":
            nll = json.loads(aevb("evaluate", str(out), "--nll", *common))
            entry["negative_log_likelihood"] = -nll["log_likelihood"]
            entry["log_likelihood_stderr"] = nll["log_likelihood_stderr"]
            entry["seconds"] = nll.get("log_likelihood_seconds")
            entry["rescore_nll"] = f"aevb evaluate models/{name} --nll --data-dir DATA_DIR"
            quick = ["--k", str(QUICK_NLL["k"]), "--num-points", str(QUICK_NLL["num_points"])]
            entry["quick_nll"] = QUICK_NLL | {
                "log_likelihood": json.loads(aevb("evaluate", str(out), "--nll", *quick, *common))["log_likelihood"]
            }
        # (the scores live in scores.json: the evaluations aevb evaluate kept in the directory go)
        (out / "evaluations.jsonl").unlink(missing_ok=True)
        entry["megabytes"] = round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 2)
        scores[name] = entry
        print(f"{name}: {entry}")
    MODELS.mkdir(exist_ok=True)
    SCORES.write_text(json.dumps(dict(sorted(scores.items())), indent=1) + "\n")
    print(f"wrote {SCORES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
