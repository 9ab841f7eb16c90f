"""Stage 2: the rating from token probabilities, its drop rule, report mode, stats."""

from __future__ import annotations

import math

import pytest

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.generation import Sampler
from ucoder.ipc.config import RoundConfig
from ucoder.ipc.dedup import Deduplicator
from ucoder.ipc.prompts import RATING_CONTINUATIONS, RATING_PREFIX, rating_prompt
from ucoder.ipc.rating import drop_reasons, expected_scores, problem_pool, rate_problems
from ucoder.ipc.stats import pairs_per_generation_minute, rating_stats
from ucoder.records import Problem


def problem(k: int) -> Problem:
    return Problem(id=f"p{k:04d}", title=f"T{k}", description=f"Return x plus {k} for x.",
                   signature=f"def f{k}(x: int) -> int", entry_point=f"f{k}")


class Peaked:
    """A backend whose score log-probs put most mass on one score per problem."""

    def __init__(self, favourite: dict[int, int]):
        self.favourite = favourite  # problem number -> the score it favours
        self.seen: list[tuple[list[str], str]] = []

    def score(self, prompts, continuations, *, prefix=""):
        self.seen.append((list(prompts), prefix))
        out = []
        for prompt, group in zip(prompts, continuations):
            k = next(i for i in self.favourite if f"T{i}\n" in prompt)
            out.append([-0.1 if c == f" {self.favourite[k]}/10" else -8.0 for c in group])
        return out


def test_expected_score_is_the_mean_over_renormalised_score_probabilities():
    backend = Peaked({0: 9, 1: 2})
    got = expected_scores(backend, [problem(0), problem(1)])
    other = math.exp(-8.0) / (math.exp(-0.1) + 9 * math.exp(-8.0))
    assert sum(got[0]["probs"]) == pytest.approx(1.0, abs=1e-3)
    assert got[0]["expected"] == pytest.approx(9 * (1 - 9 * other) + other * (55 - 9))
    assert got[1]["expected"] < 2.1 and got[0]["expected"] > 8.9
    assert 0 < got[0]["mass"] < 1
    prompts, prefix = backend.seen[0]
    assert prefix == RATING_PREFIX and prompts[0] == rating_prompt(problem(0))


def test_the_prompt_has_no_single_worked_score_to_copy():
    text = rating_prompt(problem(0))
    assert "Score: 6" not in text and "Reason:" not in text
    assert len(RATING_CONTINUATIONS) == 10 and " 1/10" in RATING_CONTINUATIONS


def test_drop_rule_ranks_within_the_round_keeps_ties_and_has_a_floor():
    scores = [7.0, 6.5, 8.0, 5.0, 7.5, 6.0, 9.0, 2.5]
    reasons = drop_reasons(scores, drop_share=0.25, min_rating=3.0)
    assert [k for k, r in enumerate(reasons) if r] == [3, 7]  # the lowest quarter
    assert "min_rating" in reasons[7] and "lowest 25%" in reasons[3]
    assert drop_reasons([6.0] * 8, drop_share=0.25, min_rating=3.0) == [None] * 8
    assert drop_reasons([2.0, 9.0], drop_share=0.0, min_rating=3.0)[0] is not None
    assert problem_pool(12, 0.25) == 16 and problem_pool(12, 0.0) == 12


@pytest.mark.parametrize("mode", ["filter", "report"])
def test_report_mode_drops_nothing_but_records_the_same_verdicts(mode):
    backend = Peaked({0: 8, 1: 7, 2: 9, 3: 4})
    kept, dropped, rows = rate_problems(backend, [problem(k) for k in range(4)], mode=mode)
    assert [r["would_drop"] for r in rows] == [False, False, False, True]
    assert all(p.rating is not None for p in kept)
    if mode == "filter":
        assert [p.id for p in kept] == ["p0000", "p0001", "p0002"]
        assert [d.item for d in dropped] == ["p0003"] and "lowest" in dropped[0].reason
    else:
        assert len(kept) == 4 and dropped == []
    with pytest.raises(ValueError, match="rating_mode='x'"):
        rate_problems(backend, [problem(0)], mode="x")


def test_config_names_bad_rating_options():
    with pytest.raises(ValueError, match="rating_mode='strict'"):
        RoundConfig(rating_mode="strict")
    with pytest.raises(ValueError, match="rating_drop_share=1"):
        RoundConfig(rating_drop_share=1)


def test_rating_on_a_real_model_reads_token_probabilities():
    tok = tiny_tokenizer()
    sampler = Sampler(tiny_llama(tok, hidden_size=64), tok, show_progress=False)
    got = expected_scores(sampler, [problem(0), problem(1)])
    assert all(1.0 <= g["expected"] <= 10.0 for g in got)
    assert got[0]["expected"] != got[1]["expected"]  # read per problem, not a constant


def test_rating_stats_compare_would_drop_with_kept():
    ratings = [{"problem_id": f"p{k}", "rating": r, "would_drop": r < 5}
               for k, r in enumerate([8.2, 7.1, 4.0, 3.5])]
    selected = [{"problem_id": "p0"}, {"problem_id": "p1"}]
    consensus = ([{"problem_id": "p0", "cluster_size": 3}] * 4
                 + [{"problem_id": "p2", "cluster_size": 1}] * 4)
    stats = rating_stats(ratings, selected, consensus)
    assert stats["would_drop"] == 2 and stats["would_drop_share"] == 0.5
    assert stats["groups"]["kept"]["selected_rate"] == 1.0
    assert stats["groups"]["would_drop"]["selected_rate"] == 0.0
    assert stats["groups"]["kept"]["largest_cluster_share"] == pytest.approx(0.375)
    assert stats["groups"]["would_drop"]["largest_cluster_share"] == pytest.approx(0.125)
    assert stats["histogram"] == {"3-4": 1, "4-5": 1, "7-8": 1, "8-9": 1}
    assert rating_stats([], [], []) == {}


def test_pairs_per_generation_minute_counts_only_the_sampling_stages():
    timings = {"problems": 30, "rated": 6, "skeletons": 12, "tests": 12, "candidates": 60,
               "executions": 500, "selected": 1}
    assert pairs_per_generation_minute(4, timings) == 2.0
    assert pairs_per_generation_minute(0, {}) is None


def test_earlier_problems_are_avoided():
    d = Deduplicator()
    d.avoid(["Complete the following Python function:\n```python\ndef count_digits(n: int)"
             ' -> int:\n    """Return how many digits the integer n has."""\n```'])
    assert "same function" in d.check("p0", "Count the digits of n, please.",
                                      "def count_digits(num)")
    assert "earlier problem 0" in d.check("p1", "Return how many digits the integer n has.",
                                          "def digits(n)")
    assert d.check("p2", "Return the largest value in the list.", "def biggest(xs)") is None
