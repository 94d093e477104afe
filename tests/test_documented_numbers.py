"""The numbers README.md and docs/*.md quote with a source comment are the numbers of the committed
result files (scripts/check_documented_numbers.py): a number that goes stale fails here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "check_documented_numbers", ROOT / "scripts" / "check_documented_numbers.py"
)
checker = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = checker  # (its dataclass looks its module up)
_spec.loader.exec_module(checker)


def test_every_sourced_number_in_the_docs_is_its_files_value(capsys):
    assert checker.main([]) == 0, capsys.readouterr().out
    total = sum(checker.check_document(document)[0] for document in checker.documents())
    assert total >= 14  # (the log-likelihood table and README's summary of it, at least)


def test_a_planted_wrong_number_fails_with_its_place_and_the_files_value(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "**86.12**<!-- from" in readme
    planted = tmp_path / "README.md"
    planted.write_text(readme.replace("**86.12**<!-- from", "**86.21**<!-- from"))
    count, mismatches = checker.check_document(planted, ROOT)
    assert count >= 4 and len(mismatches) == 1
    (mismatch,) = mismatches
    assert mismatch.text == "86.21" and "86.116" in mismatch.why and "rounds to 86.12" in mismatch.why
    assert str(mismatch).startswith(f"{planted}:")


def test_paths_selectors_csv_rows_and_operations(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"runs": [{"name": "a", "nz": 3, "seconds": 125.0, "ll": -86.1}]}))
    (tmp_path / "r.csv").write_text("dataset,latent_dim,bound\nmnist,20,-103.96\nfrey,20,1448.2\n")
    document = tmp_path / "doc.md"
    document.write_text(
        "a 2.1<!-- from r.json#runs[name=a].seconds /60 --> min run scores **86.1**<!-- from r.json#runs[nz=3].ll neg -->\n"
        "| −103.96<!-- from r.csv#rows[dataset=mnist,latent_dim=20].bound --> | 1,448<!-- from r.csv#rows[1].bound --> |\n"
        "stale: 86.2<!-- from r.json#runs[0].ll neg --> and gone: 1<!-- from r.json#runs[name=b].ll -->\n"
    )
    count, mismatches = checker.check_document(document, tmp_path)
    assert count == 6
    assert [(m.line, m.text) for m in mismatches] == [(3, "86.2"), (3, "1")]
    assert "selects 0 elements" in mismatches[1].why


@pytest.mark.parametrize("text", ["1,448.2", "−0.5", "12"])
def test_numbers_are_read_as_written(text):
    assert checker.SOURCED.search(f"x {text}<!-- from f.json#a -->").group("number") == text
