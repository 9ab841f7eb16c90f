"""``ucoder probe fit|sweep|score`` over a candidates JSONL, with a tiny local model."""

from __future__ import annotations

import json
import re

import pytest

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.cli import main
from ucoder.jsonl import read_jsonl, write_jsonl
from ucoder.probes import load_probe


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _rows(n_problems=10):
    rows = []
    for i in range(n_problems):
        for body in ["    return x + 1", "    pass", f"    return {i}", "    x = 1"]:
            rows.append({"problem_id": f"p{i}", "prompt": f"def f{i}(x):\n", "completion": body,
                         "passed": body.strip().startswith("return")})  # fmt: skip
    return rows


@pytest.fixture()
def candidates(tmp_path):
    return write_jsonl(tmp_path / "cands.jsonl", _rows())


def _run(*argv: str) -> int:
    return main(["probe", *map(str, argv)])


def test_fit_then_score(model_dir, candidates, tmp_path):
    out = tmp_path / "probe"
    assert _run("fit", "--candidates", candidates, "--label-field", "passed", "--model",
                model_dir, "--out", out, "--max-epochs", "30", "--layer", "1") == 0
    probe = load_probe(out)
    assert probe.meta["layer"] == 1 and probe.meta["base_model"] == str(model_dir)
    report = json.loads((out / "fit_report.json").read_text())
    assert report["metrics"]["val/auroc"] > 0.8
    scored = tmp_path / "scored.jsonl"
    # --model defaults to the probe's recorded base model.
    assert _run("score", "--candidates", candidates, "--probe", out, "--out", scored) == 0
    rows = read_jsonl(scored)
    assert len(rows) == 40 and all(0 <= r["probe_score"] <= 1 for r in rows)
    assert rows[0]["completion"] == "    return x + 1"


def test_sweep_saves_best_layer(model_dir, candidates, tmp_path, capsys):
    out = tmp_path / "probe"
    assert _run("sweep", "--candidates", candidates, "--label-field", "passed", "--model",
                model_dir, "--out", out, "--max-epochs", "10", "--layers", "0,-1",
                "--kind", "mlp") == 0  # fmt: skip
    report = json.loads((out / "sweep_report.json").read_text())
    assert load_probe(out).meta["layer"] == report["best_layer"] in (0, -1)
    assert "val/auroc" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rows_edit, match",
    [
        (lambda rows: rows[2].pop("passed"), "cands.jsonl:3: --label-field 'passed' is missing"),
        (lambda rows: rows[4].update(passed=1), "cands.jsonl:5: --label-field 'passed' is 1, "
                                                "not a boolean"),
        (lambda rows: rows[0].update(passed="yes"), "cands.jsonl:1: .* 'yes', not a boolean"),
        (lambda rows: rows[1].pop("problem_id"), "cands.jsonl:2: --group-field 'problem_id'"),
    ],
)
def test_bad_labels_name_the_line(model_dir, tmp_path, capsys, rows_edit, match):
    rows = _rows()
    rows_edit(rows)
    path = write_jsonl(tmp_path / "cands.jsonl", rows)
    assert _run("fit", "--candidates", path, "--label-field", "passed", "--model", model_dir,
                "--out", tmp_path / "p") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_single_class_labels(model_dir, tmp_path, capsys):
    rows = [dict(r, passed=False) for r in _rows()]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    assert _run("fit", "--candidates", path, "--label-field", "passed", "--model", model_dir,
                "--out", tmp_path / "p") == 2  # fmt: skip
    assert "needs both classes" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--layer", "3"), ("--layers", "0,9")])
def test_layer_out_of_range(model_dir, candidates, tmp_path, capsys, option, value):
    action = "fit" if option == "--layer" else "sweep"
    assert _run(action, "--candidates", candidates, "--label-field", "passed", "--model",
                model_dir, "--out", tmp_path / "p", option, value) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"{option}: index" in err and "out of range for a model with 2 layers" in err


def test_score_with_other_hidden_size(model_dir, candidates, tmp_path, capsys):
    out = tmp_path / "probe"
    assert _run("fit", "--candidates", candidates, "--label-field", "passed", "--model",
                model_dir, "--out", out, "--max-epochs", "2") == 0  # fmt: skip
    other = tmp_path / "wide"
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(other)
    tok.save_pretrained(other)
    assert _run("score", "--candidates", candidates, "--probe", out, "--model", other,
                "--out", tmp_path / "s.jsonl") == 2  # fmt: skip
    assert "hidden size 32" in capsys.readouterr().err


def test_fit_a_within_problem_ranker_then_score(model_dir, candidates, tmp_path):
    out = tmp_path / "ranker"
    assert _run("fit", "--candidates", candidates, "--label-field", "passed", "--model",
                model_dir, "--out", out, "--objective", "pairwise", "--layer", "1") == 0
    probe = load_probe(out)
    assert probe.meta["objective"] == "pairwise" and probe.meta["layer"] == 1
    report = json.loads((out / "fit_report.json").read_text())
    assert report["metrics"]["val/problems_with_both"] >= 1
    assert report["metrics"]["val/within_auroc"] > 0.8
    scored = tmp_path / "scored.jsonl"
    assert _run("score", "--candidates", candidates, "--probe", out, "--out", scored) == 0
    assert all(0 <= r["probe_score"] <= 1 for r in read_jsonl(scored))
