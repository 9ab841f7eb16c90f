"""More test inputs from the ones the model wrote: type-aware mutation of literal arguments.

A small model writes few usable tests, and the output signature is only as sharp as the
inputs it runs on (the paper's consensus bound needs |T| large). Where a call's arguments
are all literals, each argument is changed alone in small, type-preserving ways (an int
+-1, a list reversed or shortened, a string reversed, ...), as EvalPlus does. The inputs
come from the model's own calls: no outside data. Nothing here executes anything.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence


def _variants(value) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 0, -value, value * 2]
    if isinstance(value, float):
        return [value + 1.5, -value, 0.0, value / 2]
    if isinstance(value, str):
        return [value[::-1], value + value[:1], value[:-1], value.upper(), ""]
    if isinstance(value, (list, tuple)):
        seq = list(value)
        out = [seq[::-1], seq[:-1], seq + seq[:1], seq[1:] + seq[:1], []]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq):
            out += [sorted(seq), [v + 1 for v in seq]]
        return [type(value)(v) for v in out]
    if isinstance(value, dict) and value:
        first = next(iter(value))
        return [{k: v for k, v in value.items() if k != first}, {}]
    return []


def mutate_call(call: str, entry_point: str) -> list[str]:
    """Calls like ``call`` with one literal argument changed; [] if it has no literals."""
    try:
        node = ast.parse(call, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return []
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == entry_point and not node.keywords):
        return []
    try:
        args = [ast.literal_eval(a) for a in node.args]
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return []
    out = []
    for i, arg in enumerate(args):
        for variant in _variants(arg):
            new = args[:i] + [variant] + args[i + 1:]
            text = f"{entry_point}({', '.join(repr(a) for a in new)})"
            if len(text) <= 300 and text not in out:
                out.append(text)
    return out


def mutated_inputs(calls: Sequence[str], entry_point: str, count: int) -> list[str]:
    """Up to ``count`` new distinct calls, taking variants round-robin over ``calls``."""
    pools = [mutate_call(c, entry_point) for c in calls]
    seen, out = set(calls), []
    depth = max((len(p) for p in pools), default=0)
    for k in range(depth):
        for pool in pools:
            if len(out) >= count:
                return out
            if k < len(pool) and pool[k] not in seen:
                seen.add(pool[k])
                out.append(pool[k])
    return out
