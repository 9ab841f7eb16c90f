"""Stage 4 (test understanding probing): test snippets per problem, written by the model.

The model sees the skeleton and writes ``assert f(args) == expected`` lines (the answer
starts with ``assert ``). Kept: single statements — an assert or an expression — that
parse and call the entry point, normalised with ``ast.unparse`` and deduplicated, up to
``num_tests``. Everything else is in :attr:`TestSet.dropped` with its reason.

Asserts carry the model's expected outputs (a pass/fail signature); their inputs alone
(:func:`inputs_only`: ``assert f(2) == 4`` -> ``f(2)``) give output signatures that do
not depend on the model getting the expected values right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ucoder.ipc.code import ParseError, arity_of, check_test, inputs_of, split_statements
from ucoder.ipc.prompts import TEST_PREFIX, TEST_STOP, test_prompt

MAX_TEST_CHARS = 300  # a longer snippet is almost always a runaway generation
LINES_PER_SAMPLE = 4  # about how many usable lines one sample gives (sets samples per problem)


@dataclass
class TestSet:
    """Tests generated for one problem."""

    __test__ = False  # not a pytest class

    tests: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # {"text", "reason"}


def parse_tests(texts: Sequence[str], entry_point: str, num_tests: int,
                arity: tuple[int, int] | None = None) -> TestSet:
    """Keep up to ``num_tests`` distinct valid snippets from the answers ``texts``
    (``arity``: the positional-argument range calls must respect)."""
    out = TestSet()
    seen: set[str] = set()
    for text in texts:
        for snippet in split_statements(text):
            try:
                if len(snippet) > MAX_TEST_CHARS:
                    raise ParseError(f"longer than {MAX_TEST_CHARS} characters")
                test = check_test(snippet, entry_point, arity)
                if test in seen:
                    raise ParseError("duplicate")
                if len(out.tests) >= num_tests:
                    raise ParseError(f"beyond num_tests={num_tests}")
            except ParseError as err:
                out.dropped.append({"text": snippet[:MAX_TEST_CHARS], "reason": str(err)})
                continue
            seen.add(test)
            out.tests.append(test)
    return out


def generate_tests(sampler, skeletons: Sequence[str], entry_points: Sequence[str], *,
                   num_tests: int = 8, seed: int = 0, temperature: float = 0.8,
                   max_new_tokens: int = 384, samples: int | None = None) -> list[TestSet]:
    """Tests for each problem, from its skeleton (or any prompt showing the function).

    Args:
        sampler: a :class:`ucoder.generation.GenerationBackend`.
        skeletons: what the model sees per problem (signature + docstring).
        entry_points: the function each test must call.
        num_tests: tests kept per problem (at most).
        seed, temperature, max_new_tokens: sampling settings.
        samples: answers sampled per problem (default: enough for ``num_tests`` at about
            four usable lines each, at least 2).

    Returns:
        One :class:`TestSet` per problem, in order.
    """
    if len(skeletons) != len(entry_points):
        raise ValueError(f"skeletons ({len(skeletons)}) and entry_points "
                         f"({len(entry_points)}) must have the same length")
    if num_tests < 1:
        raise ValueError(f"num_tests={num_tests!r} is not allowed; use an integer >= 1")
    if not skeletons:
        return []
    n = samples or max(2, math.ceil(num_tests / LINES_PER_SAMPLE))
    prompts = [test_prompt(s, e, num_tests) for s, e in zip(skeletons, entry_points)]
    answers = sampler.sample(prompts, n, temperature=temperature, seed=seed,
                             max_new_tokens=max_new_tokens, stop=list(TEST_STOP),
                             prefix=TEST_PREFIX)
    start = TEST_PREFIX.removeprefix("```python\n")
    return [parse_tests([start + a.text for a in group], entry, num_tests,
                        arity_of(skeleton, entry))
            for group, entry, skeleton in zip(answers, entry_points, skeletons)]


def inputs_only(tests: Sequence[str], entry_point: str) -> list[str]:
    """The distinct calls the tests make, as expressions (their expected values dropped):
    ``assert f(2) == 4`` -> ``f(2)``; ``assert 8 in (f(1), f(2))`` -> ``f(1)``, ``f(2)``."""
    out: list[str] = []
    for test in tests:
        for call in inputs_of(test, entry_point):
            if call not in out:
                out.append(call)
    return out
