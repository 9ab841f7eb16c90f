"""Docstring examples that agree with the selected code (after selection, stage 6).

A small model's problem examples are often wrong (``count_digits(5) == 4``). Once a
cluster is selected, its code is the best evidence of the intended behaviour, so the
selected completion is run in the sandbox on the prompt's example inputs: an example
that disagrees gets the value the code returns; one whose input makes the code fail (or
return something that is no plain literal) is removed; a prompt left without an example
gets one from a test input. All of it is the model's own code run in the sandbox, so
this adds no external data. Nothing here runs code itself: :mod:`ucoder.sandbox` does.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Sequence

from ucoder.ipc.docstrings import Example, docstring_defect, find_examples, literal
from ucoder.records import Dropped, Problem

EXTRA_INPUTS = 4  # test inputs also run, to give a prompt left without examples one
MAX_VALUE_CHARS = 120  # a longer value would swamp the docstring
_EXAMPLE_HEADER = re.compile(r"^\s*(examples?|for example)\s*:\s*$", re.IGNORECASE)


def usable_value(output: str | None) -> str | None:
    """``output`` (a canonical repr from the sandbox) if it can be written as a literal
    in a docstring: it parses back to the same value and needs no escapes."""
    if output is None or len(output) > MAX_VALUE_CHARS or "\\" in output or '"""' in output:
        return None
    text = literal(output)
    return text if text == output and same_value(text, output) else None


def same_value(expected: str, output: str) -> bool:
    """Whether the literal ``expected`` is the value whose canonical repr is ``output``
    (type-sensitive: ``True`` is not ``1``, ``2.0`` is not ``2``)."""
    from ucoder.sandbox.canon import canonical_repr

    try:
        return canonical_repr(ast.literal_eval(expected)) == output
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return False


def run_calls(sandbox, programs: Sequence[str], calls: Sequence[Sequence[str]],
              timeout: float | None = None) -> list[dict[str, str | None]]:
    """Per program, ``call -> usable value`` (None: it raised, timed out or returned no
    plain literal), from one sandbox batch."""
    from ucoder.sandbox import Job

    jobs = [Job(id=str(i), code=code, tests=list(cs), timeout=timeout)
            for i, (code, cs) in enumerate(zip(programs, calls)) if cs]
    results = {r.id: r for r in (sandbox.run(jobs) if jobs else [])}
    out = []
    for i, cs in enumerate(calls):
        tests = list(results[str(i)].tests) if str(i) in results else []
        out.append({c: usable_value(t.output) if t.status == "passed" else None
                    for c, t in zip(cs, tests)} | {c: None for c in cs[len(tests):]})
    return out


def _removal(doc: str, e: Example) -> tuple[int, int, str]:
    """The edit removing example ``e``: its lines when it stands alone, else its sentence."""
    if e.alone:
        start = doc.rfind("\n", 0, e.start) + 1
        end = doc.find("\n", e.end)
        return start, (len(doc) if end < 0 else end + 1), ""
    start = max(doc.rfind(". ", 0, e.start) + 2, doc.rfind("\n\n", 0, e.start) + 2, 0)
    end = doc.find(". ", e.end)
    return start, (len(doc) if end < 0 else end + 2), ""


def _drop_empty_headers(doc: str) -> str:
    lines = doc.splitlines()
    keep = []
    for i, line in enumerate(lines):
        later = next((x for x in lines[i + 1:] if x.strip()), None)
        if _EXAMPLE_HEADER.match(line) and (later is None or re.match(r"^\s*\w+:\s*$", later)):
            continue
        keep.append(line)
    return re.sub(r"\n[ \t]*\n([ \t]*\n)+", "\n\n", "\n".join(keep)).strip("\n")


def rewrite_docstring(doc: str, entry_point: str, values: dict[str, str | None],
                      extra: Sequence[str] = ()) -> tuple[str, dict[str, int]]:
    """``doc`` with every valued example made to agree with ``values`` (call -> value).

    Returns:
        The new docstring and counts ``agreed``, ``rewritten``, ``removed``, ``added``.
    """
    counts = dict.fromkeys(("agreed", "rewritten", "removed", "added"), 0)
    edits = []
    examples = find_examples(doc, entry_point)
    for e in (e for e in examples if e.expected is not None):
        got = values.get(e.call)
        if got is not None and same_value(e.expected, got):
            counts["agreed"] += 1
        elif got is not None:
            edits.append((e.value_start, e.end, got))
            counts["rewritten"] += 1
        else:
            edits.append(_removal(doc, e))
            counts["removed"] += 1
    new, last = doc, len(doc) + 1
    for start, end, text in sorted(edits, reverse=True):
        if end <= last:  # overlapping edits (two examples in one sentence): first wins
            new, last = new[:start] + text + new[end:], start
    new = _drop_empty_headers(new) if counts["removed"] else new
    if not counts["agreed"] + counts["rewritten"]:
        bare = [e.call for e in examples if e.expected is None]
        call = next((c for c in [*bare, *extra] if values.get(c) is not None), None)
        if call is not None:
            new = new.rstrip() + f"\n\n>>> {call}\n{values[call]}"
            counts["added"] = 1
    return new, counts


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
          "list": (list,), "List": (list,), "dict": (dict,), "Dict": (dict,),
          "tuple": (tuple,), "Tuple": (tuple,), "set": (set,), "Set": (set,)}


def fits_signature(call: str, signature: str) -> bool:
    """Whether the literal arguments of ``call`` have the types the signature's plain
    annotations name (``f(10)`` does not fit ``def f(xs: List[int])``); an argument
    without such an annotation always fits. A new example should not teach a wrong type."""
    try:
        params = ast.parse(signature + ": pass").body[0].args
        args = ast.parse(call, mode="eval").body.args
        values = [ast.literal_eval(a) for a in args]
    except (SyntaxError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
        return False
    for value, param in zip(values, [*params.posonlyargs, *params.args]):
        ann = param.annotation
        name = ann.value if isinstance(ann, ast.Subscript) else ann
        want = _TYPES.get(name.id) if isinstance(name, ast.Name) else None
        if want and (not isinstance(value, want) or isinstance(value, bool) and bool
                     not in want):
            return False
    return True


def entry_docstring(source: str, entry_point: str) -> str | None:
    """The docstring of ``entry_point`` in ``source`` (a skeleton), or None."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return None
    func = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and n.name == entry_point), None)
    return ast.get_docstring(func, clean=True) if func is not None else None


def valued_examples(doc: str, entry_point: str) -> list[Example]:
    return [e for e in find_examples(doc, entry_point) if e.expected is not None]


def example_calls(doc: str, entry_point: str) -> list[str]:
    return list(dict.fromkeys(e.call for e in find_examples(doc, entry_point)))


def align_problem(problem: Problem, values: dict[str, str | None], extra: Sequence[str]
                  ) -> tuple[str | None, dict[str, int], str]:
    """(new skeleton or None when unchanged, counts, drop reason or "")."""
    from ucoder.ipc.prompts import build_skeleton
    from ucoder.ipc.skeleton import check_skeleton

    ep = problem.entry_point
    doc = entry_docstring(problem.skeleton, ep)
    if doc is None:
        return None, {}, "prompt has no docstring"
    new_doc, counts = rewrite_docstring(doc, ep, values, extra)
    if not valued_examples(new_doc, ep):
        return None, counts, ("no example: no input of the signature's types gives the "
                              "selected code a plain value")
    if not (counts["rewritten"] or counts["removed"] or counts["added"]):
        return None, counts, ""
    skeleton = build_skeleton(dataclasses.replace(problem, examples=[]), new_doc)
    check_skeleton(skeleton, ep)
    written = entry_docstring(skeleton, ep) or ""
    defect = docstring_defect(written, ep)
    if defect:
        return None, counts, f"docstring broken beyond repair after the rewrite: {defect}"
    if any(values.get(e.call) is None or not same_value(e.expected, values[e.call])
           for e in valued_examples(written, ep)):
        return None, counts, "rewritten examples do not read back as written"
    return skeleton, counts, ""


def align_pairs(sandbox, problems: dict[str, Problem], pairs: list[dict],
                tests_of: dict[str, list[str]], timeout: float | None = None
                ) -> tuple[list[dict], list[Dropped], list[dict]]:
    """Make every selected pair's docstring examples agree with its completion.

    Args:
        sandbox: a running :class:`ucoder.sandbox.Sandbox`.
        problems: the round's problems by id (their skeletons are the prompts).
        pairs: the selected pairs ``{"prompt", "completion", "problem_id", "scores"}``.
        tests_of: the problems' test snippets (inputs for a prompt left without example).
        timeout: sandbox seconds per pair.

    Returns:
        The kept pairs (``prompt`` rewritten where needed, ``scores["examples"]`` the
        counts), the drops (with reasons) and one rewrite record per changed prompt:
        ``{"problem_id", "before", "after", "agreed", "rewritten", "removed", "added"}``.
    """
    from ucoder.ipc.prompts import solution_prompt
    from ucoder.ipc.solutions import program_of
    from ucoder.ipc.tests import inputs_only

    todo, dropped = [], []
    for pair in pairs:
        p = problems[pair["problem_id"]]
        doc = entry_docstring(p.skeleton, p.entry_point)
        defect = "prompt has no docstring" if doc is None else \
            docstring_defect(doc, p.entry_point)
        if defect:
            dropped.append(Dropped("selected", p.id, f"docstring broken beyond repair: "
                                   f"{defect}", p.skeleton))
            continue
        calls = example_calls(doc, p.entry_point)
        extra = [c for c in inputs_only(tests_of.get(p.id, []), p.entry_point)
                 if c not in calls and fits_signature(c, p.signature)][:EXTRA_INPUTS]
        todo.append((pair, p, calls, extra))
    values = run_calls(sandbox, [program_of(p, pair["completion"]) for pair, p, _, _ in todo],
                       [calls + extra for _, _, calls, extra in todo], timeout)
    kept, rewrites = [], []
    for (pair, p, _, extra), vals in zip(todo, values):
        skeleton, counts, reason = align_problem(p, vals, extra)
        if reason:
            dropped.append(Dropped("selected", p.id, reason, p.skeleton))
            continue
        pair = {**pair, "scores": {**pair["scores"], "examples": counts}}
        if skeleton is not None:
            pair["prompt"] = solution_prompt(skeleton)
            rewrites.append({"problem_id": p.id, "before": p.skeleton, "after": skeleton,
                             **counts})
        kept.append(pair)
    return kept, dropped, rewrites
