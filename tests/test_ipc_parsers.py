"""Every parser of model output, and the dedup, on hand-written answers."""

from __future__ import annotations

import ast

import pytest

from ucoder.ipc.code import (
    ParseError,
    arity_of,
    check_signature,
    check_test,
    example_to_assert,
    extract_solution,
    find_signature,
    inputs_of,
    typing_imports,
)
from ucoder.ipc.dedup import Deduplicator, jaccard, shingles
from ucoder.ipc.prompts import (
    PROBLEM_PREFIX,
    build_skeleton,
    parse_docstring,
    parse_problem,
    parse_rating,
    solution_prompt,
)
from ucoder.ipc.skeleton import check_skeleton
from ucoder.ipc.tests import inputs_only, parse_tests
from ucoder.records import Problem

GOOD = """<PROBLEM_START>
Title: Sum of evens
Description: Return the sum of the even numbers in the list nums.
Signature: def sum_evens(nums: List[int]) -> int
Example: sum_evens([1, 2, 3, 4]) == 6
Hint: Use n % 2 == 0.
<PROBLEM_END>"""


def test_parse_problem_tagged():
    p = parse_problem(GOOD)
    assert p["title"] == "Sum of evens" and p["entry_point"] == "sum_evens"
    assert p["signature"] == "def sum_evens(nums: List[int]) -> int"
    assert p["examples"] == ["assert sum_evens([1, 2, 3, 4]) == 6"]
    assert p["hint"] == "Use n % 2 == 0."


def test_parse_problem_tolerates_markdown_missing_tags_and_def():
    text = PROBLEM_PREFIX + (" Longest word\n**Description:** Find the longest word in a "
                             "sentence s.\n**Function Signature:** `longest(s: str) -> str:`\n"
                             "Examples:\nlongest('a bb') -> 'bb'\n")
    p = parse_problem(text)
    assert p["signature"] == "def longest(s: str) -> str"
    assert p["examples"] == ["assert longest('a bb') == 'bb'"]


def test_parse_problem_finds_the_signature_in_a_code_block():
    text = ("Title: Double\nDescription: Return twice the number n given.\n"
            "```python\ndef double(n: int) -> int:\n    return 2 * n\n```")
    assert parse_problem(text)["entry_point"] == "double"


@pytest.mark.parametrize("text, reason", [
    ("Description: a b c d\nSignature: def f(x)", "no title"),
    ("Title: T\nDescription: too short\nSignature: def f(x)", "no description"),
    ("Title: T\nDescription: one two three four\nSignature: none", "no function signature"),
    ("Title: T\nDescription: one two three four\nSignature: def f() -> int", "no arguments"),
    ("Title: T\nDescription: one two three four\nSignature: def max(a, b)", "builtin"),
    ("\x00\x01 garbage", "no title"),
])
def test_parse_problem_rejects_with_a_reason(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_problem(text)


def test_signature_helpers():
    assert find_signature("use `def f(a: Dict[str, int], b=(1, 2)) -> bool:` here") == \
        "def f(a: Dict[str, int], b=(1, 2)) -> bool"
    assert find_signature("no function here") is None
    assert check_signature("def g(x, *rest)") == "g"
    assert typing_imports("def f(a: List[int]) -> Optional[int]") == \
        "from typing import List, Optional"
    assert typing_imports("def f(a: list[int])") == ""


@pytest.mark.parametrize("line, expected", [
    ("f(3) == 9", "assert f(3) == 9"), ("`f(3)` -> 9", "assert f(3) == 9"),
    ("f('a') returns 'b'", "assert f('a') == 'b'"), (">>> f(1) == 1", "assert f(1) == 1"),
    ("g(3) == 9", None), ("f(3 == ", None), ("f(3)", None)])
def test_example_to_assert(line, expected):
    assert example_to_assert(line, "f") == expected


@pytest.mark.parametrize("text, score, reason", [
    ("Score: 7\nReason: clear and complete.", 7.0, "clear and complete."),
    ("Score: **8/10** well specified", 8.0, "well specified"),
    ("Score: 4/5\nReason: fine", 8.0, "fine")])
def test_parse_rating(text, score, reason):
    assert parse_rating(text) == (score, reason)


@pytest.mark.parametrize("text, reason", [
    ("Score: 1-10\nReason: x", "copied the scale"), ("Score: great", "no score"),
    ("Score: 42", "outside 1-10"), ("Score: 0", "outside 1-10")])
def test_parse_rating_rejects(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_rating(text)


def problem(**kw):
    base = dict(id="p0000", title="Sum of evens", description="Return the sum of evens.",
                signature="def sum_evens(nums: List[int]) -> int", entry_point="sum_evens",
                examples=["assert sum_evens([1, 2, 3, 4]) == 6"])
    return Problem(**(base | kw))


def test_docstring_and_skeleton():
    answer = ('def sum_evens(nums: List[int]) -> int:\n    """Add up the even numbers.\n\n'
              '    Args:\n        nums: the numbers.\n    """\n    pass')
    doc = parse_docstring(answer)
    skeleton = build_skeleton(problem(), doc)
    assert skeleton.startswith("from typing import List\n\ndef sum_evens(")
    check_skeleton(skeleton, "sum_evens")
    func = ast.parse(skeleton).body[1]
    docstring = ast.get_docstring(func)
    assert "Add up the even numbers." in docstring and ">>> sum_evens([1, 2, 3, 4])\n6" in docstring
    assert solution_prompt(skeleton).startswith("Complete the following Python function:\n```py")
    for bad, reason in [("no quotes at all", "no docstring"), ('"""two words"""', "under 3"),
                        ('"""Sum it.\n    return sum(x)"""', "contains code")]:
        with pytest.raises(ParseError, match=reason):
            parse_docstring(bad)
    with pytest.raises(ParseError, match="does not define"):
        check_skeleton(skeleton, "other")


def test_check_test_and_inputs():
    assert check_test("assert f(2)==4", "f") == "assert f(2) == 4"
    assert check_test("print(f(2))", "f") == "f(2)"
    for snippet, reason in [("assert g(2) == 4", "does not call f"), ("x = f(2)", "not an assert"),
                            ("assert f(2 ==", "does not parse"), ("# f(2)", "comment"),
                            ("f(1); f(2)", "single statement")]:
        with pytest.raises(ParseError, match=reason):
            check_test(snippet, "f")
    with pytest.raises(ParseError, match="undefined name input_list"):
        check_test("assert f(input_list) == 1", "f")
    assert check_test("assert all(f(x) for x in [1, 2])", "f") == \
        "assert all((f(x) for x in [1, 2]))"
    assert arity_of("def f(a, b, c=1):\n    pass", "f") == (2, 3)
    assert arity_of("def f(a, *r):\n    pass", "f")[0] == 1
    with pytest.raises(ParseError, match="with 1 arguments, signature takes 2-3"):
        check_test("assert f(1) == 2", "f", arity=(2, 3))
    assert check_test("f(1, 2)", "f", arity=(2, 3)) == "f(1, 2)"
    assert inputs_of("assert f(2) == 4", "f") == ["f(2)"]
    assert inputs_of("assert not f(2)", "f") == ["f(2)"]
    assert inputs_of("f(3)", "f") == ["f(3)"]
    assert inputs_of("assert 4 == f(2)", "f") == ["f(2)"]
    assert inputs_of("assert 8 in (f(1), f(2))", "f") == ["f(1)", "f(2)"]
    assert inputs_of("assert f(f(1)) == 3", "f") == ["f(f(1))"]
    assert inputs_only(["assert f(2) == 4", "assert f(2) == 5", "f(3)"], "f") == ["f(2)", "f(3)"]


def test_parse_tests_keeps_valid_distinct_and_records_drops():
    answers = ["assert f(1) == 2\nassert f(1)==2\nassert g(1) == 2\nnot python (\n"
               "assert f(2) == 4", "assert f(3) == 6\nassert f(4) == 8"]
    ts = parse_tests(answers, "f", num_tests=3)
    assert ts.tests == ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 6"]
    reasons = [d["reason"] for d in ts.dropped]
    assert reasons == ["duplicate", "does not call f", "does not parse", "beyond num_tests=3"]


def test_extract_solution():
    text = ("import math\n\ndef f(x: int) -> int:\n    return math.floor(x) * 2\n\n"
            "print(f(2))\nassert f(1) == 2\nif __name__ == '__main__':\n    f(3)\n```\nprose")
    code = extract_solution(text, "f")
    assert code == "import math\n\ndef f(x: int) -> int:\n    return math.floor(x) * 2\n"
    for bad, reason in [("def f(x):\n    return (", "does not parse"),
                        ("def g(x):\n    return x\n", "no function f"),
                        ('def f(x):\n    """Doc."""\n    pass\n', "stub"),
                        ("def f(x):\n    raise NotImplementedError\n", "stub")]:
        with pytest.raises(ParseError, match=reason):
            extract_solution(bad, "f")


def test_dedup_exact_and_near():
    d = Deduplicator()
    assert d.check("p0", "Return the sum of the even numbers in a list.", "def f(x)") is None
    assert "exact" in d.check("p1", "return the SUM of the even numbers in a list", "def f(x)")
    assert "same function" in d.check("p2", "Something else entirely here.", "def f(x: int)")
    near = d.check("p3", "Return the sum of the even numbers in a list of ints.", "def g(y)")
    assert near.startswith("near duplicate of p0")
    assert d.check("p4", "Count the vowels of a word.", "def h(w)") is None
    assert jaccard(shingles("a b c d"), shingles("a b c d")) == 1.0
    with pytest.raises(ValueError, match="threshold"):
        Deduplicator(threshold=0)


def test_mutated_inputs_change_one_literal_argument_at_a_time():
    from ucoder.ipc.mutate import mutate_call, mutated_inputs

    assert mutate_call("f(2, 'ab')", "f")[:3] == ["f(3, 'ab')", "f(1, 'ab')", "f(0, 'ab')"]
    assert "f(2, 'ba')" in mutate_call("f(2, 'ab')", "f")
    assert "f([3, 2, 1])" in mutate_call("f([1, 2, 3])", "f")
    assert mutate_call("f(x)", "f") == [] and mutate_call("g(1)", "f") == []
    out = mutated_inputs(["f(1)", "f([5])"], "f", 3)
    # Round-robin; [5] reversed is f([5]) itself, so that pool adds nothing in round one.
    assert out == ["f(2)", "f(0)", "f([])"]


def test_skeleton_falls_back_to_the_description():
    from ucoder.ipc.skeleton import make_skeletons

    class Answers:  # a backend that answers the skeleton prompt with a fixed text
        def __init__(self, text):
            self.text = text

        def sample(self, prompts, n=1, **kw):
            from ucoder.generation import Sample

            return [[Sample(self.text, [], 0.0, 0.0, 0, "stop")] for _ in prompts]

    good = 'def sum_evens(nums):\n    """Add the even numbers up."""\n'
    kept, dropped = make_skeletons(Answers(good), [problem()])
    assert kept[0].skeleton_source == "model" and "Add the even numbers up." in kept[0].skeleton
    kept, _ = make_skeletons(Answers("return 3"), [problem()])
    assert kept[0].skeleton_source == "derived: no docstring in the answer"
    assert "Return the sum of evens." in kept[0].skeleton
    kept, _ = make_skeletons(None, [problem()], use_model=False)
    assert kept[0].skeleton_source == "derived: model not asked"
    kept, _ = make_skeletons(None, [problem(description='Quotes """ and \\ here')],
                             use_model=False)
    assert "Quotes ''' and / here" in kept[0].skeleton
    kept, dropped = make_skeletons(None, [problem(signature="def sum_evens(x")],
                                   use_model=False)
    assert kept == [] and "does not parse" in dropped[0].reason
