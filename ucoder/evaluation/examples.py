"""Tests read from what the prompt shows: its worked examples (parsed, never run).

HumanEval docstrings show examples in several forms (``>>> f(2)`` then ``4``;
``f(2) == 4``; ``f(2) ==> 4``; ``f(2) -> 4``; ``f(2) should return 4``). Each call of the
entry point with a value that parses becomes ``assert f(2) == 4``; a call whose value
cannot be read becomes the bare call ``f(2)`` (an input: it must run, and its output
joins the behaviour signature). The examples are part of the prompt the model is given,
not of the hidden tests, so selecting on them keeps the evaluation honest.
"""

from __future__ import annotations

from ucoder.ipc.docstrings import find_examples


def prompt_examples(prompt: str, entry_point: str, limit: int = 10) -> list[str]:
    """Distinct test snippets (asserts or bare calls) from the examples in ``prompt``,
    read by the round's own parser (:func:`ucoder.ipc.docstrings.find_examples`)."""
    start = prompt.find(f"def {entry_point}(")
    if start < 0:
        return []
    body = prompt[prompt.find("\n", start) + 1:]
    out: list[str] = []
    for example in find_examples(body, entry_point):
        snippet = example.as_test()
        if snippet not in out and len(snippet) <= 300:
            out.append(snippet)
    return out[:limit]
