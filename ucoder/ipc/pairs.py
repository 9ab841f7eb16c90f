"""Is a training pair clean? The check a person reading ``selected.jsonl`` would make.

:func:`check_pair` is static (nothing runs): the completion parses, defines the entry
point exactly once and holds nothing else at top level but the imports, helpers and
constants that function uses (it is its own normal form,
:func:`ucoder.ipc.normalize.normalize_solution`); the prompt's docstring is whole and
shows at least one example with a value. :func:`check_pairs` adds the sandbox: each
docstring example, run on the completion, returns the value the docstring shows.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from ucoder.ipc.agreement import entry_docstring, run_calls, same_value, valued_examples
from ucoder.ipc.code import ParseError
from ucoder.ipc.docstrings import docstring_defect
from ucoder.ipc.normalize import kept_statements


def prompt_code(prompt: str) -> str | None:
    """The code block of a solution prompt (the skeleton), or None."""
    head, sep, rest = prompt.partition("```python\n")
    return rest.partition("```")[0] if sep else None


def _skeleton(pair: dict) -> tuple[str, str]:
    """(skeleton, entry point) of a pair's prompt; raises ParseError."""
    code = prompt_code(pair.get("prompt", ""))
    try:
        tree = ast.parse(code or "")
    except (SyntaxError, ValueError, RecursionError) as err:
        raise ParseError("prompt's code does not parse") from err
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if code is None or len(funcs) != 1:
        raise ParseError("prompt does not show exactly one function")
    return code, funcs[0].name


def _check_completion(completion: str, entry_point: str) -> None:
    tree, keep, _ = kept_statements(completion, entry_point)
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name == entry_point]
    if len(defs) != 1:
        raise ParseError(f"defines {entry_point} {len(defs)} times")
    extra = [n for i, n in enumerate(tree.body) if i not in keep]
    if extra:
        raise ParseError(f"top-level code {entry_point} does not use (line "
                         f"{extra[0].lineno}: {ast.unparse(extra[0]).splitlines()[0][:60]})")


def check_pair(pair: dict) -> str | None:
    """None for a clean training pair, else the reason it is not clean.

    Args:
        pair: a ``selected.jsonl`` row (``prompt``, ``completion``).
    """
    try:
        skeleton, entry_point = _skeleton(pair)
        _check_completion(pair.get("completion", ""), entry_point)
    except ParseError as err:
        return str(err)
    doc = entry_docstring(skeleton, entry_point)
    if doc is None:
        return "prompt has no docstring"
    defect = docstring_defect(doc, entry_point)
    if defect:
        return f"docstring: {defect}"
    if not valued_examples(doc, entry_point):
        return "docstring has no example with a value"
    return None


def _program(skeleton: str, completion: str) -> str:
    tree = ast.parse(skeleton)
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(imports + ["", completion]) if imports else completion


def check_pairs(pairs: Sequence[dict], sandbox=None, timeout: float = 5.0) -> list[str | None]:
    """:func:`check_pair` for each pair, then its docstring examples run on its completion
    in the sandbox (``sandbox`` or a new one): None where all agree, else the reason."""
    from ucoder.sandbox import sandbox_or_new

    reasons = [check_pair(p) for p in pairs]
    todo = [i for i, r in enumerate(reasons) if r is None]
    if not todo:
        return reasons
    parsed = {i: _skeleton(pairs[i]) for i in todo}
    examples = {i: valued_examples(entry_docstring(*parsed[i]) or "", parsed[i][1])
                for i in todo}
    with sandbox_or_new(sandbox, timeout) as box:
        values = run_calls(box, [_program(parsed[i][0], pairs[i]["completion"]) for i in todo],
                           [list(dict.fromkeys(e.call for e in examples[i])) for i in todo],
                           timeout)
    for i, got in zip(todo, values):
        for e in examples[i]:
            if got.get(e.call) is None or not same_value(e.expected, got[e.call]):
                reasons[i] = (f"example {e.call} == {e.expected} disagrees with the code "
                              f"(it gives {got.get(e.call) or 'no plain value'})")
                break
    return reasons
