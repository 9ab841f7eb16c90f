"""A whole round: the files, selection, drops with reasons, resume, config, CLI.

Two generators: a scripted backend (answers chosen per stage, so the right selection is
known: it stands in for the model, not for anything under test) and tiny_llama, whose
random output is the "malformed answer at every stage" case. The sandbox is real.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from ucoder.generation import Sample, Sampler
from ucoder.ipc.config import RoundConfig, load_round_config, round_config_from_dict
from ucoder.ipc.consensus import SelectionConfig
from ucoder.ipc.pairs import check_pairs
from ucoder.ipc.prompts import PROBLEM_PREFIX, RATING_PREFIX, TEST_PREFIX
from ucoder.ipc.round import STAGES, RoundRunner
from ucoder.jsonl import read_jsonl
from ucoder.sandbox import Sandbox

PROBLEMS = [
    " Double\nDescription: Return twice the integer x given.\nSignature: def double(x: int) -> int"
    "\nExample: double(2) == 4\nHint: multiply.",
    " Broken answer with no fields at all",
    " Twice\nDescription: Return twice the integer x given.\nSignature: def double(x: int) -> int",
    " Shout\nDescription: Return the string s in upper case letters.\n"
    "Signature: def shout(s: str) -> str\nExample: shout('a') == 'A'",
]
SOLUTIONS = {  # per entry point: (code, how many of the samples write it)
    "double": ["def double(x: int) -> int:\n    return 2 * x\n```",
               "def double(x):\n    return x + x\n```",
               "def double(x):\n    return x * x\n```",
               "def double(x):\n    return (\n```"],
    "shout": ["def shout(s: str) -> str:\n    return s.upper()\n```",
              "def shout(s):\n    return s.upper()\n```",
              "def shout(s):\n    return s.lower()\n```",
              "def helper(s):\n    return s\n```"],
}


class Scripted:
    """A GenerationBackend that answers by stage; counts its calls per stage."""

    def __init__(self):
        self.calls: Counter = Counter()

    def sample(self, prompts, n=1, *, prefix="", **kwargs):
        out = []
        for i, prompt in enumerate(prompts):
            out.append([Sample(text=t, token_ids=[], sum_logprob=-1.0 - k,
                               mean_logprob=-0.1 * (k + 1), num_tokens=5, finish_reason="stop",
                               prompt_index=i, sample_index=k)
                        for k, t in enumerate(self._answers(prompt, prefix, i, n))])
        return out

    def score(self, prompts, continuations, *, prefix=""):
        self.calls["rated"] += 1
        return [[-1.0 if c.strip() == "8/10" else -5.0 for c in group]
                for group in continuations]

    def _answers(self, prompt, prefix, i, n):
        if prefix == PROBLEM_PREFIX:
            self.calls["problems"] += 1
            return [PROBLEMS[i % len(PROBLEMS)]] * n
        if prefix == RATING_PREFIX:
            self.calls["rated"] += 1
            return [" 8\nReason: clear."] * n
        if prefix == TEST_PREFIX:
            self.calls["tests"] += 1
            name = "double" if "double" in prompt else "shout"
            arg = ["3", "-1", "0"] if name == "double" else ["'b'", "'Hi'", "''"]
            return [f"{name}({a}) == 0\nassert {name}({a}) == 1" for a in arg][:n]
        if prompt.startswith("Write the docstring"):
            self.calls["skeletons"] += 1
            return ['def f(x):\n    """Does the task as described above."""'] * n
        self.calls["candidates"] += 1
        name = "double" if "double" in prompt else "shout"
        return [SOLUTIONS[name][k % 4] for k in range(n)]


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, timeout=3.0, memory_mb=256) as sb:
        yield sb


# rating_drop_share=0: the problems stage makes exactly `problems` (no surplus for the
# rating to drop), so the drop counts below are those of the scripted answers.
CONFIG = RoundConfig(problems=3, samples=8, tests=4, problem_attempts=2.0, rating_drop_share=0.0)


def test_a_round_selects_the_consensus_and_records_every_drop(tmp_path, box):
    stats = RoundRunner(Scripted(), tmp_path, CONFIG, sandbox=box).run()
    for stage in STAGES:
        assert (tmp_path / f"{stage}.jsonl").exists()
        assert (tmp_path / f"{stage}.dropped.jsonl").exists()
    selected = read_jsonl(tmp_path / "selected.jsonl")
    assert stats["selected"] == len(selected) == 2
    by_id = {r["problem_id"]: r for r in selected}
    assert "return 2 * x" in by_id["p0000"]["completion"]  # right, agrees, most fluent
    assert "s.upper()" in by_id["p0001"]["completion"]
    assert "```" not in by_id["p0000"]["completion"]
    assert by_id["p0000"]["prompt"].startswith("Complete the following Python function:")
    assert "def double(x: int) -> int:" in by_id["p0000"]["prompt"]
    assert by_id["p0000"]["scores"]["cluster_size"] == 4
    consensus = read_jsonl(tmp_path / "consensus.jsonl")
    assert len(consensus) == stats["counts"]["executions"] == 12  # 2 x (8 - 2 dropped)
    assert {k for r in consensus for k in r} >= {"problem_id", "prompt", "completion",
                                                 "mean_logprob", "execution_success",
                                                 "cluster_size", "in_consensus", "selected"}
    assert sum(r["in_consensus"] for r in consensus) == 8
    assert sum(r["selected"] for r in consensus) == 2
    assert stats["dropped"]["problems"] == {"no description": 2, "exact duplicate of <id>": 2}
    assert stats["dropped"]["candidates"] == {"does not parse": 2, "no function shout": 2}
    assert stats["cluster_size_histogram"] == {"2": 2, "4": 2}
    assert set(stats["seconds"]) == set(STAGES)
    tests = read_jsonl(tmp_path / "tests.jsonl")
    # The example's call, the model's calls (2 answers), then 6 mutations of them.
    assert tests[0]["tests"][:3] == ["double(2)", "double(3)", "double(-1)"]
    assert len(tests[0]["tests"]) == 9 and "double(1)" in tests[0]["tests"]


def test_resume_redoes_only_the_missing_stage_and_later(tmp_path, box):
    gen = Scripted()
    RoundRunner(gen, tmp_path, CONFIG, sandbox=box).run()
    first = dict(gen.calls)
    mtimes = {s: os.stat(tmp_path / f"{s}.jsonl").st_mtime_ns for s in STAGES}
    (tmp_path / "tests.jsonl").unlink()
    gen.calls.clear()
    runner = RoundRunner(gen, tmp_path, CONFIG, sandbox=box)
    stats = runner.run()
    assert runner.ran == ["tests", "candidates", "executions", "selected"]
    assert set(gen.calls) == {"tests", "candidates"}
    assert gen.calls["tests"] == first["tests"]
    for s in ("problems", "rated", "skeletons"):
        assert os.stat(tmp_path / f"{s}.jsonl").st_mtime_ns == mtimes[s]
    assert stats["selected"] == 2
    # A finished round: no generation, no sandbox needed.
    gen.calls.clear()
    again = RoundRunner(None, tmp_path, CONFIG)
    assert again.run()["selected"] == 2 and again.ran == [] and not gen.calls


def test_other_settings_in_the_same_dir_are_refused(tmp_path, box):
    RoundRunner(Scripted(), tmp_path, CONFIG, sandbox=box).run()
    with pytest.raises(ValueError, match="other settings"):
        RoundRunner(Scripted(), tmp_path, RoundConfig(problems=5), sandbox=box).run()


def test_extra_score_reaches_the_candidates(tmp_path, box):
    seen = []

    def probe(prompts, completions):
        seen.append(len(completions))
        return [1.0 if "x + x" in c else 0.0 for c in completions]

    cfg = RoundConfig(problems=3, samples=8, tests=4, problem_attempts=2.0, rating_drop_share=0.0,
                      selection=SelectionConfig(signature="output", extra_weight=10.0))
    RoundRunner(Scripted(), tmp_path, cfg, sandbox=box, extra_score=probe).run()
    selected = {r["problem_id"]: r for r in read_jsonl(tmp_path / "selected.jsonl")}
    assert seen == [12] and "x + x" in selected["p0000"]["completion"]


def test_malformed_output_everywhere_never_crashes(tmp_path, box):
    from tests.tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    sampler = Sampler(tiny_llama(tok), tok, show_progress=False)
    cfg = RoundConfig(problems=2, samples=2, tests=2, problem_tokens=24, rating_tokens=8,
                      skeleton_tokens=8, test_tokens=16, solution_tokens=16,
                      rating_drop_share=0.0)
    stats = RoundRunner(sampler, tmp_path, cfg, sandbox=box).run()
    assert stats["selected"] == 0 and stats["counts"]["problems"] == 0
    dropped = read_jsonl(tmp_path / "problems.dropped.jsonl")
    assert len(dropped) == 3 and all(d["reason"] and "text" in d for d in dropped)


def test_config_from_yaml_and_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("problems: 5\nselection:\n  policy: success_rate\n")
    cfg = load_round_config(path, samples=3, tests=None)
    assert (cfg.problems, cfg.samples, cfg.tests) == (5, 3, 8)
    assert cfg.selection.policy == "success_rate"
    for data, word in [({"problemz": 3}, "problemz"), ({"samples": 0}, "samples=0"),
                       ({"test_form": "x"}, "test_form='x'"),
                       ({"selection": {"rho": 1}}, "rho")]:
        with pytest.raises(ValueError, match=word):
            round_config_from_dict(data)
    path.write_text("- a list")
    with pytest.raises(ValueError, match="mapping"):
        load_round_config(path)


def test_cli_rejects_a_bad_config_before_loading_a_model(tmp_path, capsys):
    from ucoder.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("samplez: 3\n")
    assert main(["round", "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    assert "samplez" in capsys.readouterr().err


def test_the_shipped_config_is_the_defaults():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "round.yaml"
    assert load_round_config(path) == RoundConfig()


@pytest.mark.integration
def test_a_small_round_on_the_embedded_model(tmp_path, box):
    import torch

    from ucoder.models import EMBEDDED_MODEL, load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread decodes fastest
    try:
        model, tok = load_model(EMBEDDED_MODEL)
        sampler = Sampler(model, tok, show_progress=False)
        cfg = RoundConfig(problems=3, samples=4, tests=4)
        runner = RoundRunner(sampler, tmp_path, cfg, sandbox=box)
        stats = runner.run()
    finally:
        torch.set_num_threads(threads)
    assert runner.ran == list(STAGES)
    assert stats["counts"]["problems"] >= 1  # the model writes parsable problems
    assert (tmp_path / "stats.json").exists()
    selected = read_jsonl(tmp_path / "selected.jsonl")
    for row in selected:
        assert row["prompt"].startswith("Complete the following Python function:")
        assert "```" not in row["completion"]
    assert check_pairs(selected, box) == [None] * len(selected)  # clean, examples agree
    assert RoundRunner(None, tmp_path, cfg).run()["selected"] == stats["selected"]
