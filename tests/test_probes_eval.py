"""``ucoder eval --probe DIR`` and ``--from-report --probe``: a saved probe scores the
candidates from their exact generation context, the probe policies read the scores, and
another probe rescores from the kept features with no model."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.cli import main
from ucoder.evaluation.probe_scores import features_path
from ucoder.probes import fit_probe, save_probe

MBPP_ROWS = [
    {"task_id": 11, "text": "Write a function to add two numbers.",
     "code": "def add(a, b):\n    return a + b\n",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
    {"task_id": 12, "text": "Write a function to negate a number.",
     "code": "def neg(a):\n    return -a\n", "test_list": ["assert neg(1) == -1"]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model saved to disk, two probes on it (layers 1 and 2), an MBPP file."""
    root = tmp_path_factory.mktemp("probe-eval")
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(40, model.config.hidden_size, generator=g)
    labels, groups = feats[:, 0] > 0, [f"p{i // 4}" for i in range(40)]
    for layer in (1, 2):
        probe, _ = fit_probe(feats, labels, groups, max_epochs=3, layer=layer,
                             val_fraction=0.0)
        save_probe(probe, root / f"probe{layer}", model=model)
    (root / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MBPP_ROWS))
    return root


def _eval(root, *extra) -> int:
    return main(["eval", "--model", str(root / "model"), "--benchmark",
                 str(root / "mbpp.jsonl"), "--samples", "3", "--prompt-tests", "--tests", "0",
                 "--select", "max_logprob,probe,ucoder,ucoder+probe",
                 "--max-new-tokens", "6", "--threads", "1", *map(str, extra)])


def test_eval_with_a_probe_then_rescore_from_the_report(setup, tmp_path, capsys):
    first = tmp_path / "r1.json"
    assert _eval(setup, "--probe", setup / "probe1", "--out", first) == 0
    report = json.loads(first.read_text())
    assert report["probe"]["layer"] == 1 and features_path(first).is_file()
    # Garbage code passes no example: ucoder falls back to fluency, ucoder+probe to the probe.
    assert report["policies"]["ucoder"]["fallback_steps"] == {"fluency": 2}
    assert report["policies"]["ucoder+probe"]["fallback_steps"] == {"probe": 2}
    assert "(2 fallbacks: probe 2)" in capsys.readouterr().out
    for row in report["per_problem"]:
        scores = [c["probe_score"] for c in row["candidates"]]
        assert all(0.0 <= s <= 1.0 for s in scores)
        # "probe" picks the highest score; without a cluster ucoder+probe also asks it.
        assert row["policies"]["probe"]["index"] == scores.index(max(scores))
    # The same scores as the probe reading (prompt_text, raw) through its own scorer.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ucoder.probes import ProbeScorer, load_probe

    model = AutoModelForCausalLM.from_pretrained(setup / "model")
    tok = AutoTokenizer.from_pretrained(setup / "model")
    cands = [c for r in report["per_problem"] for c in r["candidates"]]
    direct = ProbeScorer(model, tok, load_probe(setup / "probe1", model)).score(
        [c["prompt_text"] for c in cands], [c["raw"] for c in cands])
    assert [c["probe_score"] for c in cands] == pytest.approx(direct, abs=1e-4)
    second = tmp_path / "r2.json"
    assert main(["eval", "--from-report", str(first), "--probe", str(setup / "probe2"),
                 "--select", "probe,ucoder+probe", "--out", str(second)]) == 0
    again = json.loads(second.read_text())
    assert again["probe"]["layer"] == 2 and again["probe_features"] == str(features_path(first))
    old = [c["probe_score"] for r in report["per_problem"] for c in r["candidates"]]
    new = [c["probe_score"] for r in again["per_problem"] for c in r["candidates"]]
    assert len(new) == len(old) == 6 and new != old


def test_rescore_refuses_a_probe_of_another_architecture(setup, tmp_path, capsys):
    from tests.tiny import tiny_gpt2

    first = tmp_path / "r1.json"
    assert _eval(setup, "--probe", setup / "probe1", "--out", first) == 0
    tok = tiny_tokenizer()
    other = tiny_gpt2(tok)
    probe, _ = fit_probe(torch.randn(8, other.config.hidden_size), [True, False] * 4,
                         [f"p{i}" for i in range(8)], max_epochs=1, layer=1,
                         val_fraction=0.0)
    save_probe(probe, tmp_path / "gpt2probe", model=other)
    assert main(["eval", "--from-report", str(first), "--probe", str(tmp_path / "gpt2probe"),
                 "--select", "probe", "--out", str(tmp_path / "r3.json")]) != 0
    assert "trained on another architecture (GPT2LMHeadModel)" in capsys.readouterr().err
    assert not (tmp_path / "r3.json").exists()


def test_eval_without_features_names_the_option(setup, tmp_path, capsys):
    first = tmp_path / "r1.json"
    assert _eval(setup, "--out", first) == 0
    assert main(["eval", "--from-report", str(first), "--probe", str(setup / "probe1"),
                 "--select", "probe", "--out", str(tmp_path / "r2.json")]) != 0
    assert "--probe with --from-report needs the features" in capsys.readouterr().err
