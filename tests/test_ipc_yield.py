"""Variety and yield: earlier rounds' problems are avoided; stats count clean pairs per
generation minute; the rating's report mode keeps every problem."""

from __future__ import annotations

import pytest

from tests.test_ipc_round import Scripted
from ucoder.ipc.config import RoundConfig
from ucoder.ipc.pairs import check_pair
from ucoder.ipc.round import RoundRunner
from ucoder.ipc.stats import clean_pairs
from ucoder.jsonl import read_jsonl
from ucoder.sandbox import Sandbox

CONFIG = RoundConfig(problems=3, samples=8, tests=4, problem_attempts=2.0, rating_drop_share=0.0)


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, timeout=3.0, memory_mb=256) as sb:
        yield sb


def test_a_round_avoids_the_problems_of_earlier_rounds(tmp_path, box):
    first = RoundRunner(Scripted(), tmp_path / "r0", CONFIG, sandbox=box).run()
    assert first["selected"] == 2
    earlier = [r["prompt"] for r in read_jsonl(tmp_path / "r0" / "selected.jsonl")]
    stats = RoundRunner(Scripted(), tmp_path / "r1", CONFIG, sandbox=box,
                        avoid_problems=earlier).run()
    assert stats["counts"]["problems"] == 0 and stats["selected"] == 0
    reasons = [d["reason"] for d in read_jsonl(tmp_path / "r1" / "problems.dropped.jsonl")]
    assert sum("earlier problem" in r for r in reasons) >= 2


def test_stats_report_clean_pairs_per_generation_minute(tmp_path, box):
    stats = RoundRunner(Scripted(), tmp_path, CONFIG, sandbox=box).run()
    assert stats["clean_selected"] == 2
    minutes = sum(stats["seconds"][s] for s in ("problems", "rated", "skeletons", "tests",
                                                "candidates")) / 60
    # Stage times are kept to 10 ms; a scripted round can take less than that in all.
    if minutes:
        assert stats["pairs_per_generation_minute"] == pytest.approx(2 / minutes, rel=0.02)
    else:
        assert stats["pairs_per_generation_minute"] is None
    assert stats["rating"]["problems"] == 2 and stats["rating"]["would_drop"] == 0


def test_report_mode_keeps_every_problem_and_flags_the_lowest(tmp_path, box):
    cfg = RoundConfig(problems=3, samples=8, tests=4, problem_attempts=2.0,
                      rating_mode="report", rating_drop_share=0.5)
    gen = Scripted()
    gen.score = lambda prompts, conts, prefix="": [
        [-1.0 if c.strip() == ("9/10" if "double" in p else "2/10") else -6.0 for c in g]
        for p, g in zip(prompts, conts)]
    stats = RoundRunner(gen, tmp_path, cfg, sandbox=box).run()
    ratings = {r["problem_id"]: r for r in read_jsonl(tmp_path / "ratings.jsonl")}
    assert stats["counts"]["rated"] == stats["counts"]["problems"] == 2
    assert [r["would_drop"] for r in ratings.values()] == [False, True]
    groups = stats["rating"]["groups"]
    assert stats["rating"]["mode"] == "report"
    assert groups["would_drop"]["problems"] == 1 and groups["kept"]["problems"] == 1


def test_unclean_pairs_are_not_counted():
    prompt = ('Complete:\n```python\ndef f(x: int) -> int:\n    """Return twice the integer x.'
              '\n\n    >>> f(2)\n    4\n    """\n```')
    good = {"prompt": prompt, "completion": "def f(x: int) -> int:\n    return 2 * x\n"}
    twice = {"prompt": prompt, "completion": good["completion"] * 2}
    chatty = {"prompt": prompt, "completion": good["completion"] + "print(f(2))\n"}
    assert check_pair(good) is None
    assert check_pair(twice) is not None and check_pair(chatty) is not None
    assert clean_pairs([good, twice, chatty]) == 1


def test_plan_with_result_kinds_covers_every_topic_before_repeating():
    from ucoder.ipc.problems import problem_plan
    from ucoder.ipc.prompts import RESULT_KINDS, TOPICS, problem_prompt

    plan = problem_plan(len(TOPICS) + 6, seed=3, kinds=True)
    assert {p[2] for p in plan[:len(TOPICS)]} == set(TOPICS)
    assert all(p[3] in RESULT_KINDS for p in plan) and len(set(plan)) == len(plan)
    assert problem_plan(4, seed=3, kinds=True) != problem_plan(4, seed=4, kinds=True)
    assert "The function returns a count." in problem_prompt("c", "easy", "sets", "returns a count")
    assert "The function" not in problem_prompt(*problem_plan(1, seed=3)[0])


def test_several_problems_per_prompt_share_one_prompt(tmp_path):
    from ucoder.ipc.problems import generate_problems

    calls = []

    class Counting(Scripted):
        def sample(self, prompts, n=1, **kwargs):
            calls.append((len(prompts), n))
            return super().sample(prompts, n, **kwargs)

    kept, dropped = generate_problems(Counting(), 10, attempts=7, per_prompt=2)
    assert calls == [(4, 2)]
    assert len(kept) + len(dropped) == 8 and {p.entry_point for p in kept} == {"double", "shout"}
