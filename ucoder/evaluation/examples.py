"""Tests read from what the prompt shows: its worked examples (parsed, never run).

HumanEval docstrings show examples in several forms (``>>> f(2)`` then ``4``;
``f(2) == 4``; ``f(2) ==> 4``; ``f(2) -> 4``; ``f(2) should return 4``). Each call of the
entry point with a value that parses becomes ``assert f(2) == 4``; a call whose value
cannot be read becomes the bare call ``f(2)`` (an input: it must run, and its output
joins the behaviour signature). The examples are part of the prompt the model is given,
not of the hidden tests, so selecting on them keeps the evaluation honest.
"""

from __future__ import annotations

import ast
import re

# What may stand between a call and its expected value.
_ARROW = re.compile(r"\s*(?:==>|=>|==|->|\u279e|\u2192|=|should\s+return|returns?|is)\s*")


def prompt_examples(prompt: str, entry_point: str, limit: int = 10) -> list[str]:
    """Distinct test snippets (asserts or bare calls) from the examples in ``prompt``."""
    start = prompt.find(f"def {entry_point}(")
    if start < 0:
        return []
    body = prompt[prompt.find("\n", start) + 1:]
    out: list[str] = []
    for match in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\(", body):
        end = _close(body, match.end() - 1)
        if end is None:
            continue
        call = body[match.start():end]
        if not _literal_call(call):
            continue
        want = _expected(body, end)
        snippet = f"assert {call} == {want}" if want is not None else call
        if snippet not in out and len(snippet) <= 300:
            out.append(snippet)
    return out[:limit]


def _close(text: str, open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, min(len(text), open_at + 400)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return None


def _literal_call(call: str) -> bool:
    """A call with arguments, all literal values (``f(n - 1)`` in prose is no example)."""
    try:
        node = ast.parse(call, mode="eval").body
        if not (node.args or node.keywords):
            return False  # "write f() that ..." in prose
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (SyntaxError, ValueError, TypeError, AttributeError, RecursionError, MemoryError):
        return False
    return True


def _literal(text: str) -> str | None:
    """``text`` (trimmed of a trailing period/comma) if it is a plain literal value."""
    text = text.strip().rstrip(".,;")
    if not text:
        return None
    try:
        ast.literal_eval(text)  # parses it too
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None
    return text


def _expected(body: str, end: int) -> str | None:
    """The value written after the call: on the same line after an arrow, or on the
    next line after a ``>>>`` call (doctest)."""
    line_end = body.find("\n", end)
    rest = body[end:line_end if line_end >= 0 else len(body)]
    arrow = _ARROW.match(rest)
    if arrow and rest[arrow.end():].strip():
        return _literal(rest[arrow.end():])
    if rest.strip() or line_end < 0:
        return None
    line_start = body.rfind("\n", 0, end) + 1
    if not body[line_start:end].lstrip().startswith(">>>"):
        return None
    next_end = body.find("\n", line_end + 1)
    nxt = body[line_end + 1:next_end if next_end >= 0 else len(body)].strip()
    return _literal(nxt) if nxt and not nxt.startswith(">>>") else None
