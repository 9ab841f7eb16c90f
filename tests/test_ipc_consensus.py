"""Selection on hand-made candidate sets whose right answer is known."""

from __future__ import annotations

import pytest

from ucoder.ipc.consensus import (
    Candidate,
    SelectionConfig,
    candidate_from_result,
    cluster,
    execution_success,
    select,
)
from ucoder.sandbox import Result, TestResult

T, F = True, False


def cand(name, passed, hashes=None, logprob=-1.0, extra=None):
    hashes = hashes if hashes is not None else ["ok" if p else "AssertionError" for p in passed]
    return Candidate(completion=name, mean_logprob=logprob, passed=list(passed),
                     hashes=list(hashes), extra_score=extra)


def pick(cands, **kw):
    sel = select(cands, SelectionConfig(**kw))
    return None if sel.index is None else cands[sel.index].completion, sel


# Three right programs agree; two wrong ones pass 4/5 with a different (shared) vector;
# one wrong program is the most fluent and passes everything but one test.
PASS_SET = [
    cand("right-a", [T, T, T, T, T], logprob=-0.9),
    cand("wrong-1", [T, T, T, T, F], logprob=-0.5),
    cand("right-b", [T, T, T, T, T], logprob=-0.7),
    cand("wrong-2", [T, T, T, T, F], logprob=-0.6),
    cand("right-c", [T, T, T, T, T], logprob=-0.8),
    cand("crash", [], [], logprob=-0.1),
    cand("weak", [T, F, F, F, F], logprob=-0.2),
]


def test_ucoder_pass_takes_the_largest_cluster_then_the_lowest_perplexity():
    name, sel = pick(PASS_SET)
    assert name == "right-b"
    assert sel.clusters[0] == [0, 2, 4]
    assert sel.in_consensus == [T, F, T, F, T, F, F]
    assert sel.success[1] == pytest.approx(0.8) and sel.success[5] == 0.0


def test_ucoder_min_success_filters_before_clustering():
    # With rho = 1.0 only the right cluster qualifies even if wrong ones were more numerous.
    cands = PASS_SET + [cand("wrong-3", [T, T, T, T, F]), cand("wrong-4", [T, T, T, T, F])]
    assert pick(cands, min_success=1.0)[0] == "right-b"
    # With rho = 0.8 the four agreeing wrong programs now form the largest cluster.
    assert pick(cands, min_success=0.8)[0] == "wrong-1"


def test_ucoder_declines_without_a_big_enough_cluster():
    cands = [cand("a", [T, T], ["1", "2"]), cand("b", [T, T], ["1", "3"])]
    name, sel = pick(cands, signature="output")
    assert name is None and "min_cluster" in sel.reason and not any(sel.in_consensus)
    assert pick(cands, signature="output", min_cluster=1)[0] in ("a", "b")


def test_output_signature_separates_programs_that_pass_alike():
    # Input-only tests: every program "passes" (runs), outputs tell them apart.
    cands = [
        cand("double-a", [T, T, T], ["2", "4", "6"], logprob=-1.0),
        cand("square", [T, T, T], ["1", "4", "9"], logprob=-0.2),
        cand("double-b", [T, T, T], ["2", "4", "6"], logprob=-0.5),
        cand("raises", [T, T, F], ["1", "4", "ValueError"], logprob=-0.1),
    ]
    name, sel = pick(cands, signature="pass")
    assert name == "square" and sel.clusters[0] == [0, 1, 2]
    name, sel = pick(cands, signature="output")
    assert name == "double-b" and sel.clusters[0] == [0, 2]


def test_dual_prefers_many_tests_passed_over_size():
    # Cluster X: 3 members passing 1 of 4 tests -> 1*sqrt(3) = 1.73.
    # Cluster Y: 2 members passing 4 of 4 -> 4*sqrt(2) = 5.66 (CodeT's choice).
    x = [cand(f"x{i}", [T, F, F, F], ["a", "b", "c", "d"]) for i in range(3)]
    y = [cand(f"y{i}", [T, T, T, T], ["e", "f", "g", "h"], logprob=-i) for i in range(2)]
    assert pick(x + y, signature="dual", min_success=0.0)[0] == "y0"
    assert pick(x + y, signature="output", min_success=0.0)[0] == "x0"


def test_largest_cluster_ignores_success():
    cands = [cand("bad-a", [F, F]), cand("bad-b", [F, F]), cand("bad-c", [F, F]),
             cand("good", [T, T])]
    assert pick(cands, policy="largest_cluster")[0] == "bad-a"
    assert pick(cands, policy="ucoder")[0] is None


def test_success_rate_low_perplexity_and_random_passing():
    cands = [cand("full-slow", [T, T, T, T, T], logprob=-2.0),
             cand("most-fluent", [T, T, T, T, F], logprob=-0.1),
             cand("full-fast", [T, T, T, T, T], logprob=-1.0),
             cand("fails", [F, F, F, F, F], logprob=-0.01)]
    assert pick(cands, policy="success_rate")[0] == "full-fast"
    assert pick(cands, policy="low_perplexity")[0] == "most-fluent"
    chosen = {pick(cands, policy="random_passing", seed=s)[0] for s in range(30)}
    assert chosen == {"full-slow", "most-fluent", "full-fast"}
    assert pick(cands, policy="random_passing", seed=3)[0] == \
        pick(cands, policy="random_passing", seed=3)[0]
    assert pick([cands[3]], policy="success_rate")[0] is None


def test_extra_score_reorders_inside_the_cluster():
    cands = [cand("fluent", [T, T], logprob=-0.5, extra=0.1),
             cand("probe-likes", [T, T], logprob=-0.6, extra=0.9)]
    assert pick(cands)[0] == "fluent"
    assert pick(cands, extra_weight=1.0)[0] == "probe-likes"


def test_nothing_to_select():
    assert pick([])[1].reason == "no candidates"
    name, sel = pick([cand("crash", [], [])])
    assert name is None and "no test passed" in sel.reason and sel.clusters == []
    name, sel = pick([cand("crash", [], [])], ignore_dead_tests=False)
    assert name is None and "ran" in sel.reason


def test_dead_tests_are_ignored():
    # Test 2 fails for everyone (e.g. len() of an int): without it the right cluster
    # passes everything and qualifies; with it nobody reaches rho = 0.8.
    cands = [cand("right-a", [T, T, F], logprob=-0.5), cand("right-b", [T, T, F]),
             cand("wrong", [T, F, F])]
    name, sel = pick(cands)
    assert name == "right-a" and sel.live_tests == [0, 1] and sel.success[0] == 1.0
    assert pick(cands, ignore_dead_tests=False)[0] is None


def test_cluster_and_success_helpers():
    cands = [cand("a", [T, F]), cand("b", [T, F]), cand("c", [T, T]), cand("d", [], [])]
    assert cluster(cands, "pass") == [[0, 1], [2]]
    assert execution_success(cands[0]) == 0.5 and execution_success(cands[3]) == 0.0


def test_candidate_from_a_sandbox_result():
    result = Result(id="x", status="failed", tests=[
        TestResult(passed=True, status="passed", output="3", hash="h3"),
        TestResult(passed=False, status="error", hash="hValueError")])
    c = candidate_from_result("def f(): pass", -0.25, result)
    assert c.passed == [True, False] and c.hashes == ["h3", "hValueError"]
    assert candidate_from_result("x", -1, None).passed == []


@pytest.mark.parametrize("kw, word", [
    ({"signature": "hash"}, "signature='hash'"), ({"policy": "best"}, "policy='best'"),
    ({"min_success": 1.5}, "min_success=1.5"), ({"min_cluster": 0}, "min_cluster=0"),
    ({"extra_weight": float("nan")}, "extra_weight=nan")])
def test_bad_options_name_the_option_and_what_is_allowed(kw, word):
    with pytest.raises(ValueError, match="allowed") as err:
        SelectionConfig(**kw)
    assert word in str(err.value)


def test_the_registry_lists_every_policy_with_a_description():
    from ucoder.ipc.consensus import POLICIES, get_policy, list_policies

    names = [p.name for p in list_policies()]
    assert names == list(POLICIES) and names[0] == "ucoder" and "any_parsable" in names
    assert all(p.description for p in list_policies())
    assert not get_policy("any_parsable").needs_execution
    assert not get_policy("random_passing").uses_extra_score
    with pytest.raises(ValueError, match="policy='best' is not allowed; choose one of ucoder"):
        get_policy("best")


def test_any_parsable_picks_a_parsing_candidate_without_running_anything():
    from ucoder.ipc.consensus import apply_policy

    good = ["def f(x):\n    return x\n", "def f(x):\n    return 2 * x\n"]
    cands = [Candidate(completion="def f(x) return", mean_logprob=-0.1)] + [
        Candidate(completion=c, mean_logprob=-1.0) for c in good]  # no test results at all
    picks = {apply_policy("any_parsable", cands, SelectionConfig(seed=s)).index
             for s in range(20)}
    assert picks == {1, 2}  # never the broken one; the seed changes the draw
    again = apply_policy("any_parsable", cands, SelectionConfig(seed=3))
    assert again.index == apply_policy("any_parsable", cands, SelectionConfig(seed=3)).index
    assert "2 that parse" in again.reason
    # The execution-based policies decline on the same candidates.
    assert apply_policy("random_passing", cands).index is None
    none = apply_policy("any_parsable", cands[:1])
    assert none.index is None and none.reason == "no candidate parses"
