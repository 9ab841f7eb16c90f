"""The loop's parts on their own: the DDP shard merge, the probe's input text, the
use_in_selection check, the generation model, ``ucoder probe`` reading C3 fields."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.callbacks import ProbeRefitter, RoundStep, SelfTraining
from ucoder.callbacks.base import GenerationModel
from ucoder.callbacks.merge import merge_stats
from ucoder.generation import Sampler
from ucoder.ipc.config import RoundConfig
from ucoder.ipc.consensus import SelectionConfig
from ucoder.ipc.prompts import SOLUTION_PREFIX, solution_prompt
from ucoder.ipc.solutions import sample_candidates
from ucoder.jsonl import read_json, write_json
from ucoder.records import Problem


def test_shard_stats_merge_weights_means_sums_counts_and_takes_the_slowest_time(tmp_path):
    shards = [
        {"selected": 3, "counts": {"consensus_rows": 10, "candidates": 12},
         "mean_execution_success": 0.9, "seconds": {"candidates": 5.0, "executions": 2.0},
         "seconds_total": 7.0, "dropped": {"tests": {"too few": 1}}},
        {"selected": 1, "counts": {"consensus_rows": 30, "candidates": 40},
         "mean_execution_success": 0.5, "seconds": {"candidates": 3.0, "executions": 6.0},
         "seconds_total": 9.0, "dropped": {"tests": {"too few": 2, "bad": 1}}},
        {"selected": 0, "counts": {"consensus_rows": 0, "candidates": 0},
         "mean_execution_success": None, "seconds": {"candidates": 1.0, "executions": None},
         "seconds_total": 1.0},
    ]
    merged = merge_stats(shards)
    assert merged["selected"] == 4 and merged["counts"] == {"consensus_rows": 40,
                                                            "candidates": 52}
    assert merged["mean_execution_success"] == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert merged["seconds"] == {"candidates": 5.0, "executions": 6.0}
    assert merged["seconds_total"] == 9.0
    assert merged["dropped"] == {"tests": {"too few": 3, "bad": 1}}
    for k, stats in enumerate(shards):
        write_json(tmp_path / f"rank_{k}" / "stats.json", stats)
    RoundStep.merge(tmp_path, 3)
    assert read_json(tmp_path / "stats.json")["mean_execution_success"] == 0.6


def test_use_in_selection_needs_a_weight_and_a_policy_that_use_the_probe():
    probe = ProbeRefitter(use_in_selection=True)
    with pytest.raises(ValueError, match=r"extra_weight=0\.0.*policy='ucoder'"):
        SelfTraining(RoundStep(RoundConfig()), probe=probe)
    blind = RoundConfig(selection=SelectionConfig(policy="random_passing", extra_weight=1.0))
    with pytest.raises(ValueError, match="use_in_selection.*policy='random_passing'"):
        SelfTraining(RoundStep(blind), probe=probe)
    used = RoundConfig(selection=SelectionConfig(extra_weight=0.5))
    assert SelfTraining(RoundStep(used), probe=probe).probe is probe
    with pytest.raises(ValueError, match="generation='fast'"):
        SelfTraining(generation="fast")


class _Solver(Sampler):
    """The real sampler (chat template, prefix, ``prompt_text``) whose random model's
    text is replaced by a solution that parses, so the rows are real candidate rows."""

    def sample(self, prompts, n=1, **kwargs):
        groups = super().sample(prompts, n, **kwargs)
        self.samples = [[replace(s, text=f"def twice(w):\n    return w * {j + 1}\n```")
                         for j, s in enumerate(g)] for g in groups]
        return self.samples


def test_the_probe_reads_the_exact_generation_context(monkeypatch):
    import ucoder.probes

    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    problem = Problem(id="p0", title="twice", description="Repeat w.",
                      signature="def twice(w: str) -> str", entry_point="twice",
                      skeleton='def twice(w: str) -> str:\n    """Repeat w."""\n')
    sampler = _Solver(model, tok, show_progress=False)
    rows, _ = sample_candidates(sampler, [problem], 4, max_new_tokens=4)
    samples = sampler.samples[0]
    context = sampler.format_prompt(solution_prompt(problem.skeleton), SOLUTION_PREFIX)
    assert samples[0].prompt_text == context and context.endswith(SOLUTION_PREFIX)
    assert [r["prompt_text"] for r in rows] == [s.prompt_text for s in samples]
    assert [r["raw"] for r in rows] == [s.text for s in samples]

    seen = {}
    real = ucoder.probes.extract_features

    def spy(model, tokenizer, prompts, completions, **kw):
        seen.update(prompts=list(prompts), completions=list(completions))
        return real(model, tokenizer, prompts, completions, **kw)

    monkeypatch.setattr(ucoder.probes, "extract_features", spy)
    labelled = [{**r, "problem_id": f"p{k % 2}", "in_consensus": k % 2 == 0}
                for k, r in enumerate(rows + rows)]
    probe, record = ProbeRefitter(min_examples=4, max_epochs=2).fit(model, tok, labelled, 0)
    assert probe is not None and record["candidates"] == 8
    assert seen["prompts"] == [s.prompt_text for s in samples] * 2
    assert seen["completions"] == [s.text for s in samples] * 2
    # Rows from before the fields existed rebuild the same context.
    old = [{"prompt": solution_prompt(problem.skeleton), "completion": "x"}]
    assert ProbeRefitter.inputs(old, lambda p: sampler.format_prompt(p, SOLUTION_PREFIX)) == (
        [context], ["x"])


def test_merged_copy_generation_is_a_separate_model_with_the_same_outputs():
    from ucoder.models import LoraOptions, add_lora

    tok = tiny_tokenizer()
    model = add_lora(tiny_llama(tok), LoraOptions(r=4, alpha=8, dropout=0.0), quantized=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    module = type("M", (), {"model": model})()
    ids = torch.tensor([tok("def f(x): return x").input_ids])
    with GenerationModel(module, "training_weights") as gen:
        assert gen.model is model
    with GenerationModel(module, "merged_copy") as gen:
        copy = gen.model
        assert copy is not model and gen.model is copy  # built once per step
        with torch.no_grad():
            assert torch.allclose(copy(input_ids=ids).logits, model(input_ids=ids).logits,
                                  atol=1e-4)
    assert gen._copy is None  # dropped when the step ends


def test_probe_cli_reads_prompt_text_and_raw_when_the_rows_have_them(tmp_path):
    from ucoder.commands.probe import read_candidates
    from ucoder.jsonl import write_jsonl

    rows = [{"problem_id": "p0", "prompt": "P", "prompt_text": "<chat>P```python\n",
             "completion": "def f(): return 1", "raw": "def f(): return 1\n```", "ok": True},
            {"problem_id": "p0", "prompt": "P", "prompt_text": "<chat>P```python\n",
             "completion": "def f(): return 2", "raw": "def f(): return 2\n```", "ok": False}]
    path = write_jsonl(tmp_path / "consensus.jsonl", rows)
    cands = read_candidates(path, "auto", "auto", "problem_id", "ok")
    assert cands.prompts == ["<chat>P```python\n"] * 2 and cands.completions[0].endswith("```")
    plain = write_jsonl(tmp_path / "plain.jsonl", [
        {k: v for k, v in r.items() if k not in ("prompt_text", "raw")} for r in rows])
    cands = read_candidates(plain, "auto", "auto", "problem_id", "ok")
    assert cands.prompts == ["P", "P"] and cands.completions[1] == "def f(): return 2"


def _gate_rows(logprob_sign: float) -> list[dict]:
    """16 problems, 2 consensus-positive and 2 negative candidates each; positives read
    differently, and their mean log-prob is above (sign +1) or below (-1) the negatives'."""
    rows = []
    for p in range(16):
        for j in range(4):
            good = j < 2
            body = f"return x * {p + 2}" if good else "pass  # not done"
            rows.append({"problem_id": f"p{p}", "prompt_text": f"Task {p}:\n",
                         "raw": f"def f(x):\n    {body}\n", "in_consensus": good,
                         "mean_logprob": logprob_sign * (1.0 if good else -1.0) - 0.01 * j})
    return rows


@pytest.mark.parametrize("sign, used", [(-1.0, True), (1.0, False)])
def test_the_loop_uses_the_probe_only_when_it_beats_logprob_held_out(sign, used):
    from types import SimpleNamespace

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    module = SimpleNamespace(model=tiny_llama(tok, hidden_size=64), tokenizer=tok)
    refitter = ProbeRefitter(use_in_selection=True, min_examples=4, max_epochs=30)
    probe, record = refitter.fit(module.model, tok, _gate_rows(sign), 0)
    held = record["held_out"]
    assert probe is not None and held["problems"] >= 3
    # Log-prob ranks the held-out positives perfectly (1.0: no probe can beat it) or
    # exactly backwards (0.0: any probe that is not backwards too beats it).
    assert held["logprob"] == (1.0 if sign > 0 else 0.0) and held["helps"] is used
    loop = SelfTraining(RoundStep(RoundConfig(selection=SelectionConfig(extra_weight=0.5))),
                        probe=refitter)
    loop._plug(module, probe, record, 0)
    assert record["used_in_selection"] is used and (loop._extra_score is not None) is used
    assert ("beats" in record["selection_reason"] or "does not beat" in
            record["selection_reason"])
    if used:
        scores = loop._extra_score(["Task 0:\n"], ["def f(x):\n    return x * 2\n"])
        assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
    # Asked not to gate, the probe joins selection whatever log-prob does.
    refitter.require_beats_logprob = False
    assert refitter.admits(record)[0] is True
