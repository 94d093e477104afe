"""scripts/merge_nll_tables.py: a later run's row replaces its model's row, the others stay,
dropped rows go, and tables at another budget are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("merge_nll_tables", ROOT / "scripts" / "merge_nll_tables.py")
merge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge)


def _table(budget, **scores):
    return {
        "protocol": "p",
        "budget": budget,
        "models": [{"model": m, "negative_log_likelihood": v} for m, v in scores.items()],
    }


def test_newer_rows_replace_their_models_only_and_keep_the_protocols_order():
    target = _table(0.25, **{"paper-z20": 95.5, "iwae-vae": 87.2, "iwae-k5": 86.2})
    first = _table(0.25, **{"iwae-k5": 86.0, "paper-z20": 94.0})
    second = _table(0.25, **{"paper-z20": 93.0, "paper-z50": 92.0})
    rows = merge.merged(target, [first, second])["models"]
    assert [(row["model"], row["negative_log_likelihood"]) for row in rows] == [
        ("paper-z20", 93.0),
        ("paper-z50", 92.0),
        ("iwae-vae", 87.2),
        ("iwae-k5", 86.0),
    ]


def test_a_table_at_another_budget_is_refused():
    with pytest.raises(SystemExit, match="budget 0.02"):
        merge.merged(_table(0.25, **{"iwae-vae": 87.2}), [_table(0.02, **{"iwae-vae": 93.0})])


def test_dropped_rows_go_and_a_later_run_brings_them_back():
    target = _table(0.25, **{"paper-z20": 95.5, "paper-z50": 95.4, "iwae-vae": 87.2})
    rows = merge.merged(target, [], drop=("paper-z20", "paper-z50"))["models"]
    assert [row["model"] for row in rows] == ["iwae-vae"]
    rows = merge.merged(target, [_table(0.25, **{"paper-z50": 94.0})], drop=("paper-z20", "paper-z50"))["models"]
    assert [(row["model"], row["negative_log_likelihood"]) for row in rows] == [("paper-z50", 94.0), ("iwae-vae", 87.2)]


def test_dropping_a_model_the_table_does_not_have_is_refused():
    with pytest.raises(SystemExit, match="no row for paper-z50"):
        merge.merged(_table(0.25, **{"iwae-vae": 87.2}), [], drop=("paper-z50",))
