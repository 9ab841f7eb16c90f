"""Docstrings that agree with the code: the example parser, wholeness, repair, rewriting
from the selected code's behaviour in the sandbox, and the clean-pair check (C6)."""

from __future__ import annotations

import pytest

from ucoder.ipc.agreement import rewrite_docstring
from ucoder.ipc.code import ParseError, example_to_assert
from ucoder.ipc.docstrings import docstring_defect, find_examples, repair_docstring
from ucoder.ipc.pairs import check_pair, check_pairs
from ucoder.ipc.prompts import solution_prompt
from ucoder.sandbox import Sandbox


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, timeout=3.0, memory_mb=256) as sb:
        yield sb


@pytest.mark.parametrize("arrow", ["==", "->", "=>", "==>", "\u2192", "\u279e", "returns",
                                   "should return", "gives", "is"])
def test_every_arrow_form_is_read_by_both_parsers(arrow):
    line = f"f([1, 2]) {arrow} [2, 1]"
    assert example_to_assert(line, "f") == "assert f([1, 2]) == [2, 1]"
    (found,) = find_examples(f"Reverse it.\n{line}.\n", "f")
    assert (found.call, found.expected, found.alone) == ("f([1, 2])", "[2, 1]", True)


def test_doctests_prose_and_non_examples():
    text = (">>> f(2)\n    4\nSo f(3) returns 9 because it squares.\nf(n - 1) recurses.\n"
            "g.f(1) == 2\n>>> f(5)\n>>> f(6)\n")
    found = find_examples(text, "f")
    assert [(e.call, e.expected, e.alone) for e in found] == [
        ("f(2)", "4", True), ("f(3)", "9", False), ("f(5)", None, True), ("f(6)", None, True)]
    assert text[found[0].value_start:found[0].end] == "4"


@pytest.mark.parametrize("doc, defect", [
    ("Count the digits.\n\nReturns:\n    The number of non-", "Returns is cut off"),
    ("The number of non-", "Summary is cut off"),
    ("Count the digits of n.\n\nArgs:\n\nReturns:\n    The count.", "empty Args section"),
    ("Count the digits of n.\n\nReturns:", "empty Returns section"),
    ("Sum the list (of ints", "Summary is cut off"),
    ("Digits.", "summary under 3 words"),
])
def test_docstring_defects(doc, defect):
    assert docstring_defect(doc, "f") == defect


def test_repair_cuts_back_to_a_full_sentence_and_drops_empty_sections():
    doc = ("Count the digits of n. Zero has one digit and the\n\nArgs:\n\n"
           "Returns:\n    The number of non-\n\nExample: f(5) == 1\n")
    assert repair_docstring(doc, "f") == "Count the digits of n."
    assert docstring_defect("Count the digits of n.\n\n>>> f(5)\n1", "f") is None
    with pytest.raises(ParseError, match="beyond repair"):
        repair_docstring("The number of non-", "f")


def test_rewrite_fixes_wrong_values_removes_failing_inputs_and_adds_one_when_none_left():
    doc = ("Count digits. For example f(7) returns 2. It is fast.\n\n"
           ">>> f(5)\n4\n\n>>> f(-1)\n1\n\nExample: f(10) == 2")
    values = {"f(7)": "1", "f(5)": "1", "f(-1)": None, "f(10)": "2"}
    new, counts = rewrite_docstring(doc, "f", values)
    assert counts == {"agreed": 1, "rewritten": 2, "removed": 1, "added": 0}
    assert new == ("Count digits. For example f(7) returns 1. It is fast.\n\n"
                   ">>> f(5)\n1\n\nExample: f(10) == 2")
    values = {"f(-1)": None, "f(0)": None, "f(12)": "2"}  # f(0) raised
    new, counts = rewrite_docstring("Count digits.\n\n>>> f(-1)\n1", "f", values,
                                    extra=["f(0)", "f(12)"])
    assert counts["removed"] == 1 and counts["added"] == 1
    assert new == "Count digits.\n\n>>> f(12)\n2"


SKELETON = 'def f(n: int) -> int:\n    """Count the digits of n.\n\n    >>> f(5)\n    1\n    """\n'


def test_check_pair_names_what_is_not_clean():
    pair = {"prompt": solution_prompt(SKELETON), "completion":
            "def f(n: int) -> int:\n    return len(str(abs(n)))\n"}
    assert check_pair(pair) is None
    for completion, reason in [
        (pair["completion"] + "\nprint(f(5))\n", "top-level code f does not use"),
        ("def f(n):\n    return 1\n\n" + pair["completion"], "defines f 2 times"),
        ("def f(n):\n    return (", "does not parse")]:
        assert reason in check_pair({**pair, "completion": completion})
    assert "cut off" in check_pair({**pair, "prompt": pair["prompt"].replace(
        "Count the digits of n.", "The number of non-")})
    assert "no example" in check_pair({**pair, "prompt": solution_prompt(
        'def f(n: int) -> int:\n    """Count the digits of n."""\n')})


def test_check_pairs_runs_the_examples(box):
    good = {"prompt": solution_prompt(SKELETON),
            "completion": "def f(n: int) -> int:\n    return len(str(abs(n)))\n"}
    wrong = {**good, "completion": "def f(n: int) -> int:\n    return n\n"}
    crash = {**good, "completion": "def f(n: int) -> int:\n    return 1 // 0\n"}
    reasons = check_pairs([good, wrong, crash, {**good, "completion": "x = 1\n"}], box)
    assert reasons[0] is None
    assert reasons[1] == "example f(5) == 1 disagrees with the code (it gives 5)"
    assert "no plain value" in reasons[2] and "no function f" in reasons[3]


class _Docstrings:
    """Answers the skeleton prompt with fixed texts (stands in for the model)."""

    def __init__(self, text):
        self.text = text

    def sample(self, prompts, n=1, **kwargs):
        from ucoder.generation import Sample

        return [[Sample(self.text, [], -1.0, -0.1, 5, "length")] for _ in prompts]


def test_skeletons_mend_a_cut_off_docstring_or_drop_the_problem():
    from ucoder.ipc.skeleton import make_skeletons
    from ucoder.records import Problem

    def problem(description):
        return Problem(id="p0", title="t", description=description,
                       signature="def f(x: int) -> int", entry_point="f",
                       examples=["assert f(12) == 2"])

    cut = 'def f(x: int) -> int:\n    """Count the digits of x. Zero has one digit and the'
    (kept,), _ = make_skeletons(_Docstrings(cut), [problem("Count the digits.")])
    assert kept.skeleton_source == "model"
    assert '"""Count the digits of x.\n\n    >>> f(12)\n    2\n    """' in kept.skeleton
    broken = 'def f(x: int) -> int:\n    """Returns:\n    """'
    kept, dropped = make_skeletons(_Docstrings(broken), [problem("The number of non-")])
    assert kept == [] and dropped[0].reason == \
        "docstring broken beyond repair: summary under 3 words"


def test_a_round_rewrites_a_wrong_example_from_the_selected_code(tmp_path, box):
    from tests.test_ipc_round import CONFIG, Scripted
    from ucoder.ipc.round import RoundRunner
    from ucoder.jsonl import read_jsonl

    class WrongExample(Scripted):
        def _answers(self, prompt, prefix, i, n):
            return [a.replace("double(2) == 4", "double(2) == 5")
                    for a in super()._answers(prompt, prefix, i, n)]

    stats = RoundRunner(WrongExample(), tmp_path, CONFIG, sandbox=box).run()
    assert stats["examples"] == {"agreed": 1, "rewritten": 1, "removed": 0, "added": 0,
                                 "prompts_rewritten": 1}
    (rewrite,) = read_jsonl(tmp_path / "rewrites.jsonl")
    assert rewrite["problem_id"] == "p0000" and rewrite["rewritten"] == 1
    assert ">>> double(2)\n    5\n" in rewrite["before"]
    assert ">>> double(2)\n    4\n" in rewrite["after"]
    selected = {r["problem_id"]: r for r in read_jsonl(tmp_path / "selected.jsonl")}
    assert selected["p0000"]["prompt"] == solution_prompt(rewrite["after"])
    assert selected["p0000"]["scores"]["examples"]["rewritten"] == 1
    assert selected["p0001"]["scores"]["examples"] == {"agreed": 1, "rewritten": 0,
                                                       "removed": 0, "added": 0}
    assert check_pairs(list(selected.values()), box) == [None, None]


def test_an_added_example_takes_an_input_of_the_signatures_types():
    from ucoder.ipc.agreement import fits_signature

    signature = "def f(scores: List[int], name: str, k=2) -> int"
    assert fits_signature("f([1, 2], 'a')", signature)
    assert fits_signature("f([1], 'a', 'anything')", signature)
    assert not fits_signature("f(10, 'a')", signature)  # a list was asked for
    assert not fits_signature("f([1], True)", signature)
    assert not fits_signature("f(True)", "def f(n: int)") and fits_signature("f(1)",
                                                                           "def f(x: float)")
