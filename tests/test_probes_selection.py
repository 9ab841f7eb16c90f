"""Selection that uses a probe: the ``probe`` and ``ucoder+probe`` policies and the
fallback ladder of ``ucoder eval`` (execution evidence first, then the probe, fluency last)."""

from __future__ import annotations

import random

from ucoder.evaluation.runner import build_report
from ucoder.evaluation.selection import ProblemTests, fallback_pick, pick
from ucoder.ipc.consensus import Candidate, SelectionConfig, apply_policy, list_policies


def cand(passed, logprob, probe=None, code="x") -> Candidate:
    return Candidate(completion=code, mean_logprob=logprob, passed=list(passed),
                     hashes=[str(p) for p in passed], extra_score=probe)


def test_registry_lists_the_probe_policies():
    names = {p.name: p for p in list_policies()}
    assert not names["probe"].needs_execution
    assert names["ucoder+probe"].needs_execution


def test_probe_picks_the_highest_score_and_declines_without_scores():
    cands = [cand([1], -0.1, 0.2), cand([0], -0.9, 0.9), cand([1], -0.5, 0.4)]
    assert apply_policy("probe", cands).index == 1
    assert apply_policy("probe", [cand([1], -0.1), cand([1], -0.2)]).index is None


def test_ucoder_probe_breaks_ties_in_the_cluster_by_probe_not_fluency():
    # Three candidates agree (cluster of 3); the most fluent has the lowest probe score.
    cands = [cand([1, 1], -0.1, 0.1), cand([1, 1], -0.5, 0.8), cand([1, 1], -0.9, 0.3),
             cand([0, 1], -0.05, 0.99)]
    assert apply_policy("ucoder", cands).index == 0
    assert apply_policy("ucoder+probe", cands).index == 1


def test_ucoder_probe_declines_like_ucoder_without_a_cluster():
    cands = [cand([1, 0], -0.1, 0.9), cand([0, 1], -0.2, 0.1)]
    assert apply_policy("ucoder+probe", cands).index is None
    assert apply_policy("ucoder", cands).index is None


def test_fallback_relaxes_rho_before_anything_else():
    # Success 0.75 everywhere: no cluster at rho=0.8, a cluster of two at rho=0.6.
    cands = [cand([1, 1, 1, 0], -0.9, 0.1), cand([1, 1, 1, 0], -0.8, 0.2),
             cand([0, 1, 1, 1], -0.01, 0.99)]
    k, step = fallback_pick("ucoder", cands, SelectionConfig())
    assert (k, step) == (1, "rho=0.6")
    k, step = fallback_pick("ucoder+probe", cands, SelectionConfig())
    assert (k, step) == (1, "rho=0.6")


def test_fallback_prefers_most_tests_then_probe_or_fluency():
    # No two candidates agree: the ones passing the most tests, then the tie-break.
    cands = [cand([1, 1, 0], -0.9, 0.9), cand([1, 0, 1], -0.1, 0.1), cand([0, 0, 1], -0.01, 1.0)]
    assert fallback_pick("ucoder", cands, SelectionConfig()) == (1, "most_tests")
    assert fallback_pick("ucoder+probe", cands, SelectionConfig()) == (0, "most_tests")


def test_fallback_with_no_test_passed_uses_probe_then_fluency():
    cands = [cand([0, 0], -0.9, 0.9), cand([0, 0], -0.1, 0.1)]
    assert fallback_pick("ucoder+probe", cands, SelectionConfig()) == (0, "probe")
    assert fallback_pick("ucoder", cands, SelectionConfig()) == (1, "fluency")
    unscored = [cand([0, 0], -0.9), cand([0, 0], -0.1)]
    assert fallback_pick("ucoder+probe", unscored, SelectionConfig()) == (1, "fluency")


class _Res:
    def __init__(self, passed):
        self.tests = [type("T", (), {"passed": p, "hash": str(p)})() for p in passed]


class _Problem:
    task_id = "T/0"


def _run(rows) -> dict:
    samples = [{"code": f"c{i}", "mean_logprob": lp, "passed": ok, "finish": "eos",
                "probe_score": pr, "result": _Res(res)}
               for i, (res, lp, pr, ok) in enumerate(rows)]
    return {"greedy": None, "samples": samples, "tests": ProblemTests(model=["t1", "t2"])}


def test_eval_pick_reads_probe_scores_and_report_counts_fallback_steps():
    run = _run([([0, 0], -0.1, 0.1, False), ([0, 0], -0.9, 0.9, True)])
    rng, cfg = random.Random(0), SelectionConfig()
    assert pick("ucoder+probe", run, cfg, 0, rng)["passed"] is True
    assert pick("ucoder", run, cfg, 0, rng)["passed"] is False
    row = {"task_id": "T/0", "samples": 2, "correct": 1,
           "policies": {n: pick(n, run, cfg, 0, rng) for n in ("ucoder", "ucoder+probe")}}
    report = build_report([_Problem()], ["ucoder", "ucoder+probe"], [row], 2, 0.0, {},
                          None, {})
    assert report["policies"]["ucoder+probe"]["fallback_steps"] == {"probe": 1}
    assert report["policies"]["ucoder"]["fallback_steps"] == {"fluency": 1}
    assert report["policies"]["ucoder+probe"]["pass@1"] == 1.0
