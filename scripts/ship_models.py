"""Ship the models behind published numbers as small loadable directories in ``models/`` and
score each one again, so that anyone can re-score them (issue 31).

Each run is written out as ``aevb export RUN --format hub`` writes it (model.safetensors,
model.json with the run's data, training settings and bounds, config.json and a model card;
no pickle), then scored by the commands a reader would run, and the outputs are collected in
``models/scores.json``:

* ``aevb evaluate DIR --samples 1 --json``: the test bound with one z per image, as Figure 2 draws
  it (seconds; ``tests/test_shipped_models.py`` runs it again and expects the same number);
* for the log-likelihood protocol's models, ``aevb evaluate DIR --nll --json``: test log p(x) by
  importance sampling with k = 5000 on the 10,000 test images, the table's number (minutes).

    python scripts/ship_models.py --data-dir ../shared/data --fig2 reproduce/fig2 --nll reproduce/nll

A run that is not there (or not finished) is left out and said so; models already in ``models/``
and ``scores.json`` entries for runs not given are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SCORES = MODELS / "scores.json"

#: shipped name → (which option's directory, the run in it, whether the protocol's log p(x) is its number)
SHIPPED = {
    "fig2-mnist-z20": ("fig2", "mnist-z20-aevb", False),
    "fig2-frey-z20": ("fig2", "frey-z20-aevb", False),
    "nll-iwae-vae": ("nll", "iwae-vae", True),
    "nll-iwae-k5": ("nll", "iwae-k5", True),
}


def aevb(*arguments: str) -> str:
    done = subprocess.run([sys.executable, "-m", "aevb", *arguments], capture_output=True, text=True)
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
    common = ["--json", "--no-progress", "--data-dir", args.data_dir, "--threads", "1"]
    for name in args.only or SHIPPED:
        source, run_name, protocol = SHIPPED[name]
        directory = getattr(args, source)
        run = directory / run_name if directory is not None else None
        if run is None or not (run / "model.safetensors").exists():
            print(f"{name}: no finished run {run_name} (--{source}): left out")
            continue
        out = MODELS / name
        aevb("export", str(run), "--format", "hub", "--out", str(out), "--overwrite")
        entry = {"run": run_name, "from": f"aevb reproduce {source}"}
        one_sample = json.loads(aevb("evaluate", str(out), "--samples", "1", *common))
        entry["test_bound_one_sample"] = one_sample["test_bound"]
        entry["test_bound_one_sample_stderr"] = one_sample["test_bound_stderr"]
        entry["rescore_bound"] = f"aevb evaluate models/{name} --samples 1 --data-dir DATA_DIR"
        if protocol:
            nll = json.loads(aevb("evaluate", str(out), "--nll", *common))
            entry["negative_log_likelihood"] = -nll["log_likelihood"]
            entry["log_likelihood_stderr"] = nll["log_likelihood_stderr"]
            entry["seconds"] = nll.get("log_likelihood_seconds")
            entry["rescore_nll"] = f"aevb evaluate models/{name} --nll --data-dir DATA_DIR"
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
