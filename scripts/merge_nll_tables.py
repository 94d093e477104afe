"""Put the rows of newer ``aevb reproduce nll`` tables into a committed one, model by model.

A table's rows are independent runs (one per model, its own seed), so the rows of a run made
later at the same budget replace that model's row and leave the others as they are. The
Markdown table beside the JSON, where there is one, is written again from the merged rows.

    python scripts/merge_nll_tables.py benchmarks/results/nll_binarized_mnist_budget-0.25.json \
        reproduce/nll/nll_binarized_mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aevb.experiments.nll import MODELS, markdown
from aevb.files import atomic_write_json


def merged(target: dict, newer: list[dict]) -> dict:
    """``target`` with each model's row replaced by its row in the last of ``newer`` that has it."""
    rows = {row["model"]: row for row in target["models"]}
    for table in newer:
        if table["budget"] != target["budget"] or table["protocol"] != target["protocol"]:
            raise SystemExit(
                f"budget {table['budget']} / protocol differ from the target's ({target['budget']}): not merged"
            )
        rows.update({row["model"]: row for row in table["models"]})
    order = list(MODELS)
    return target | {"models": sorted(rows.values(), key=lambda row: order.index(row["model"]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="the committed table (JSON); its .md, if any, is rewritten too")
    parser.add_argument("newer", type=Path, nargs="+", help="tables written later by aevb reproduce nll")
    args = parser.parse_args()
    table = merged(json.loads(args.target.read_text()), [json.loads(path.read_text()) for path in args.newer])
    atomic_write_json(args.target, table)
    if args.target.with_suffix(".md").exists():
        args.target.with_suffix(".md").write_text(markdown(table["models"]))
    print(
        f"{args.target}: "
        + ", ".join(f"{row['model']} {row['negative_log_likelihood']:.2f}" for row in table["models"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
