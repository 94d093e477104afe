"""The numbers README.md and docs/*.md quote with a source comment are the numbers of the committed
result files (scripts/check_documented_numbers.py): a number that goes stale fails here."""

from __future__ import annotations

import importlib.util
import json
import re
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
    source = "benchmarks/results/nll_binarized_mnist.json#models[model=iwae-vae].negative_log_likelihood"
    quoted = re.search(r"\*\*(\d+\.\d\d)\*\*<!-- from " + re.escape(source) + " -->", readme)
    assert quoted, "README quotes the full-schedule VAE's score in bold"
    value = json.loads((ROOT / "benchmarks/results/nll_binarized_mnist.json").read_text())["models"][0]
    assert value["model"] == "iwae-vae" and quoted.group(1) == f"{value['negative_log_likelihood']:.2f}"
    wrong = f"{value['negative_log_likelihood'] + 0.09:.2f}"
    planted = tmp_path / "README.md"
    planted.write_text(readme.replace(quoted.group(0), quoted.group(0).replace(quoted.group(1), wrong)))
    count, mismatches = checker.check_document(planted, ROOT)
    assert count >= 4 and len(mismatches) == 1
    (mismatch,) = mismatches
    assert mismatch.text == wrong and f"rounds to {quoted.group(1)}" in mismatch.why
    assert str(value["negative_log_likelihood"])[:6] in mismatch.why
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


def test_update_rewrites_stale_numbers_as_written_and_keeps_the_rest(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"a": -129.359, "b": 4.2, "c": 2.96, "big": 12345.6}))
    document = tmp_path / "doc.md"
    document.write_text(
        "AEVB −120.5<!-- from r.json#a --> leads by 4.2<!-- from r.json#b --> and "
        "1.3<!-- from r.json#b minus r.json#c --> nats; 12,000<!-- from r.json#big --> s; "
        "kept: 7<!-- from r.json#missing -->\n| 2.00<!-- from r.json#a plus 132 --> |\n"
    )
    count, mismatches = checker.check_document(document, tmp_path)
    assert count == 6 and len(mismatches) == 5
    assert checker.update_document(document, mismatches) == 4  # the unreadable source stays as written
    assert document.read_text() == (
        "AEVB −129.4<!-- from r.json#a --> leads by 4.2<!-- from r.json#b --> and "
        "1.2<!-- from r.json#b minus r.json#c --> nats; 12,346<!-- from r.json#big --> s; "
        "kept: 7<!-- from r.json#missing -->\n| 2.64<!-- from r.json#a plus 132 --> |\n"
    )
    assert [m.text for m in checker.check_document(document, tmp_path)[1]] == ["7"]


def test_a_sign_that_flips_is_written_with_the_documents_minus():
    assert checker.shown_as(-2.17, "1.3") == "−2.2"
    assert checker.shown_as(-2.17, "-1.3") == "-2.2"
    assert checker.shown_as(-0.01, "0.0") == "0.0"
    assert checker.shown_as(2.0, "−1.25") == "2.00"


def test_a_document_that_is_not_there_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        checker.main(["no-such.md"])
    assert exit_info.value.code == 2 and "no-such.md: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["1,448.2", "−0.5", "12"])
def test_numbers_are_read_as_written(text):
    assert checker.SOURCED.search(f"x {text}<!-- from f.json#a -->").group("number") == text


def test_quoted_keys_and_values_and_operations_between_values(tmp_path):
    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "commands": {"aevb --help": {"median": 0.056}, "python -c pass": {"median": 0.0226}},
                "rows": [{"name": "a, b [x]", "new": 86.12, "old": 86.76}],
            }
        )
    )
    (tmp_path / "s.json").write_text(json.dumps({"v": 87.16}))
    document = tmp_path / "doc.md"
    document.write_text(
        '0.056<!-- from r.json#commands["aevb --help"].median --> s, '
        '2.5<!-- from r.json#commands["aevb --help"].median over commands["python -c pass"].median -->×; '
        '0.64<!-- from r.json#rows[name="a, b [x]"].old minus rows[0].new --> below, '
        "1.04<!-- from s.json#v minus r.json#rows[0].new --> below its own, "
        "25<!-- from r.json#rows[0].new over rows[0].old *100 -->%\n"
    )
    count, mismatches = checker.check_document(document, tmp_path)
    assert count == 5
    assert [m.text for m in mismatches] == ["25"] and "99.26" in mismatches[0].why


def test_numbers_without_a_source_are_reported_and_settings_are_not(tmp_path):
    document = tmp_path / "doc.md"
    document.write_text(
        "Trained in 21 min at 3.2× the plain loop, 95% of the bound, log p(x) −86.12, at 9.3k samples/s.\n"
        "The paper's §2.4 and eq. 10, Figs. 7–11, step sizes 0.01, 0.02 and 0.1, torch 2.13.0, on\n"
        "2026-12-06 at 22:39, 784-500-20, 1.968×10⁸ samples, `--budget 0.25`, [a](x/1.5.md), every 10 s.\n"
        "The paper reports −96.2<!-- paper --> nats; a sourced 86.12<!-- from r.json#a -->.\n"
        "\n"
        "| Nz | samples/s | bound |\n"
        "| ---: | ---: | --- |\n"
        "| 20 | 6,024 | −104.66 ± 0.26 |\n"
        "\n"
        "```\n"
        "aevb train --step-size 0.05 took 12.5 s\n"
        "```\n"
        "A code span over lines, `aevb train\n"
        "--step-size 0.05\n"
        "--init-std 0.3`, is code; 1.5 after it is not.\n"
    )
    found = [(item.line, item.text) for item in checker.unsourced(document)]
    assert found == [
        (1, "21"),
        (1, "3.2"),
        (1, "95"),
        (1, "−86.12"),
        (1, "9.3"),
        (8, "6,024"),
        (8, "−104.66"),
        (8, "0.26"),
        (15, "1.5"),
    ]


def test_every_measured_number_in_the_docs_names_its_file():
    missing = [str(item) for document in checker.documents() for item in checker.unsourced(document)]
    assert not missing, "numbers with no source (scripts/check_documented_numbers.py --unsourced):\n" + "\n".join(
        missing
    )
