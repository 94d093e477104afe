"""Put the rows of newer ``aevb reproduce nll`` tables into a committed one, model by model.

A table's rows are independent runs (one per model, its own seed), so the rows of a run made
later at the same budget replace that model's row and leave the others as they are. The
Markdown table beside the JSON, where there is one, is written again from the merged rows.
``--drop MODEL ...`` removes rows that no longer stand (made with settings since changed) until
their runs are made again.

    python scripts/merge_nll_tables.py benchmarks/results/nll_binarized_mnist_budget-0.25.json \
        reproduce/nll/nll_binarized_mnist.json
    python scripts/merge_nll_tables.py benchmarks/results/nll_binarized_mnist_budget-0.25.json \
        --drop paper-z20 paper-z50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aevb.experiments.nll import MODELS, markdown
from aevb.files import atomic_write_json


def merged(target: dict, newer: list[dict], drop: tuple[str, ...] = ()) -> dict:
    """``target`` without the rows of the models in ``drop``, and with each model's row replaced by
    its row in the last of ``newer`` that has it."""
    unknown = [model for model in drop if model not in {row["model"] for row in target["models"]}]
    if unknown:
        raise SystemExit(f"no row for {', '.join(unknown)} in the target: nothing dropped")
    rows = {row["model"]: row for row in target["models"] if row["model"] not in drop}
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
    parser.add_argument("newer", type=Path, nargs="*", help="tables written later by aevb reproduce nll")
    parser.add_argument("--drop", nargs="+", default=[], metavar="MODEL", help="rows to remove from the target")
    args = parser.parse_args()
    if not args.newer and not args.drop:
        parser.error("give newer tables to merge, or --drop MODEL")
    newer = [json.loads(path.read_text()) for path in args.newer]
    table = merged(json.loads(args.target.read_text()), newer, tuple(args.drop))
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
