"""Train two small runs, estimate their log-likelihood, and compare them.

    python examples/evaluate_and_compare.py [WORK_DIR]      # default: runs/examples/evaluate-and-compare

Two VAEs that differ in one setting, the latent dimension (Nz = 2 and Nz = 5), train briefly on the
embedded MNIST sample. `aevb evaluate --nll` estimates each run's test log p(x) by importance
sampling and keeps the result in the run (RUN_DIR/evaluations.jsonl); `aevb compare` then tabulates
both runs, that log p(x) included, and draws their bound curves into one figure.

The budgets are tiny (20,000 training samples, 200 test images, k = 50) so that the whole script
runs in seconds: the numbers show the workflow, not a good model. For the paper's protocol, train
with `--max-samples 1e7` or more and evaluate with the default k = 5000 on the whole test set.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path


def aevb(*args: str, echo_output: bool = True) -> str:
    """Run one `aevb` command (as `python -m aevb`, the same interpreter); echo it (and its output)."""
    print("$ aevb " + shlex.join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "aevb", *args], capture_output=True, text=True)
    if echo_output:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"aevb {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def main(work_dir: Path) -> None:
    runs = []
    for latent_dim in (2, 5):
        run_dir = work_dir / f"z{latent_dim}"
        # A fixed step size skips §5's selection among three, which would cost more than this budget.
        aevb(
            "train",
            *("--latent-dim", str(latent_dim), "--hidden-units", "100"),
            *("--max-samples", "20000", "--step-size", "0.02", "--threads", "1", "--no-progress"),
            *("--out", str(run_dir), "--overwrite"),
        )
        runs.append(str(run_dir))

    # --json prints a list with one result per run, each naming its run; shown here in short.
    printed = aevb(
        "evaluate",
        *runs,
        *("--nll", "--k", "50", "--num-points", "200", "--samples", "10"),
        *("--threads", "1", "--no-progress", "--json"),
        echo_output=False,
    )
    for result in json.loads(printed):
        print(
            f"{result['run']}: bound {result['test_bound']:.2f} ± {result['test_bound_stderr']:.2f}, "
            f"log p(x) {result['log_likelihood']:.2f} ± {result['log_likelihood_stderr']:.2f} "
            f"(k = {result['log_likelihood_samples']}), nats per datapoint"
        )

    aevb("compare", *runs, "--out", str(work_dir / "compare.png"), "--overwrite")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples/evaluate-and-compare"))
