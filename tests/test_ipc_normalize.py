"""Clean completions: one normalisation for the round and benchmark scoring."""

from __future__ import annotations

import pytest

from ucoder.evaluation.programs import extract_code
from ucoder.ipc.code import ParseError, extract_solution
from ucoder.ipc.normalize import is_main_block, normalize_solution, strip_top_level

# The count_digits: three copies, a print, an unrelated function, a main block.
MESSY = '''import math, os
from collections import Counter

LIMIT = 10
UNUSED = 3


def count_digits(num1: int) -> int:
    return num1 % 10


def helper(x):
    return math.floor(x) + LIMIT


def count_digits(num1: int) -> int:
    return len(str(num1))


class Box:
    def get(self):
        return Counter()


@staticmethod
def count_digits(num1: int) -> int:
    # the last copy is the one Python runs
    return len(str(abs(num1))) + helper(0) - LIMIT + len(Box().get())


def count_digits_multiple(nums):
    return [count_digits(n) for n in nums]


print(count_digits(5))
assert count_digits(5) == 1
if __name__ == "__main__":
    print(count_digits_multiple([1]))
'''


def test_keeps_the_last_definition_and_what_it_uses_transitively():
    code = normalize_solution(MESSY, "count_digits")
    assert code == '''import math
from collections import Counter

LIMIT = 10

def helper(x):
    return math.floor(x) + LIMIT

class Box:
    def get(self):
        return Counter()

@staticmethod
def count_digits(num1: int) -> int:
    # the last copy is the one Python runs
    return len(str(abs(num1))) + helper(0) - LIMIT + len(Box().get())
'''
    assert code.count("def count_digits(") == 1
    for gone in ("UNUSED", "os", "print", "assert", "__main__", "count_digits_multiple",
                 "num1 % 10"):
        assert gone not in code


def test_locals_closures_and_comprehensions_are_not_module_names():
    code = ("total = 99\nx = 5\n\ndef f(items):\n    total = 0\n    g = lambda v: v * x\n"
            "    return sum(g(i) for i in items) + total\n")
    assert normalize_solution(code, "f") == ("x = 5\n\ndef f(items):\n    total = 0\n"
                                             "    g = lambda v: v * x\n"
                                             "    return sum(g(i) for i in items) + total\n")


def test_star_imports_defaults_and_shared_lines():
    code = ("from math import *\nimport os; import sys\nD = 2\n"
            "def f(x, k=D):\n    return sqrt(x) + sys.maxsize + k\n")
    assert normalize_solution(code, "f") == ("from math import *\nimport sys\n\nD = 2\n\n"
                                             "def f(x, k=D):\n"
                                             "    return sqrt(x) + sys.maxsize + k\n")


@pytest.mark.parametrize("code, reason", [
    ("def f(x):\n    return (\n", "does not parse"),
    ("def g(x):\n    return x\n", "no function f"),
    ("def f(x):\n    return x\nf = 3\n", "rebound after its definition"),
    ("async def f(x):\n    return x\n", "async"),
    ('def f(x):\n    return x\ndef f(x):\n    """Doc."""\n    pass\n', "stub"),
    ("def f(x):\n    raise NotImplementedError\n", "stub"),
])
def test_what_cannot_be_normalised_is_dropped_with_a_reason(code, reason):
    with pytest.raises(ParseError, match=reason):
        normalize_solution(code, "f")


def test_the_round_and_benchmark_scoring_share_it():
    text = MESSY + "```\nSome prose after the fence."
    assert extract_solution(text, "count_digits") == normalize_solution(MESSY, "count_digits")
    assert extract_code(text, "count_digits") == normalize_solution(MESSY, "count_digits")
    # Without an entry point (or when normalising fails) scoring only strips run code.
    assert extract_code("    return x + 1\n", "f") == "    return x + 1\n"
    stripped = extract_code(MESSY)
    assert "print(" not in stripped and "__main__" not in stripped and "UNUSED" in stripped


def test_main_block_either_way_round():
    assert strip_top_level("def f():\n    return 1\nif '__main__' == __name__:\n    f()\n") \
        == "def f():\n    return 1\n"
    import ast

    assert is_main_block(ast.parse("if __name__ == '__main__':\n    pass").body[0])
    assert not is_main_block(ast.parse("if DEBUG:\n    pass").body[0])


def test_an_unfinished_trailing_function_is_cut_unless_it_is_the_entry_point():
    done = "def f(x):\n    return x + 1\n"
    assert extract_solution(done + "\n\ndef g(items):\n    for i in", "f") == done
    with pytest.raises(ParseError, match="does not parse"):
        extract_solution(done + "\n\ndef f(items):\n    for i in", "f")
    with pytest.raises(ParseError, match="does not parse"):
        extract_solution("def f(x):\n    return (x +", "f")
