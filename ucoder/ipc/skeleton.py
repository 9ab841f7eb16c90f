"""Stage 3 (interface synthesizer): a function skeleton per problem.

The skeleton is the imports, the typed signature from the problem and a docstring with
the problem's examples as doctests — the shape of a HumanEval prompt, which is what the
model is asked to complete at test time. The signature is fixed (it came from the problem
and parses); the model is shown it and writes the docstring, which is taken from its
answer (the sampler's prefix is shared by a whole batch, so it cannot hold each problem's
``def`` line). A docstring that does not qualify (too short, contains code) is replaced
by the problem's description, and the problem records ``skeleton_source = "derived"``
and why. A docstring cut off by the token limit or with an empty ``Args:``/``Returns:``
section is mended first (cut back to its last full sentence, the empty section dropped);
a problem whose description cannot be mended either is dropped ("docstring broken beyond
repair: ..."). Every skeleton is checked with ``ast`` before it is kept.
"""

from __future__ import annotations

import ast
import re

from ucoder.ipc.code import ParseError
from ucoder.ipc.docstrings import repair_docstring
from ucoder.ipc.prompts import (
    SKELETON_PREFIX,
    SKELETON_STOP,
    build_skeleton,
    derived_docstring,
    parse_docstring,
    skeleton_prompt,
)
from ucoder.records import Dropped, Problem

# An answer whose docstring opens and never closes: the token limit cut it.
_UNCLOSED = re.compile(r'(?s)(?:(?!""").)*"""(?:(?!""").)*')


def check_skeleton(skeleton: str, entry_point: str) -> None:
    """Raise ParseError unless ``skeleton`` parses and defines ``entry_point`` as a stub."""
    try:
        tree = ast.parse(skeleton)
    except (SyntaxError, ValueError) as err:
        raise ParseError(f"skeleton does not parse ({err})") from err
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point]
    if not funcs:
        raise ParseError(f"skeleton does not define {entry_point}")
    if ast.get_docstring(funcs[0]) is None:
        raise ParseError("skeleton has no docstring")


def make_skeletons(sampler, problems: list[Problem], *, use_model: bool = True, seed: int = 0,
                   max_new_tokens: int = 96) -> tuple[list[Problem], list[Dropped]]:
    """Fill ``problem.skeleton`` (model docstring, else derived); return kept and dropped.

    Args:
        use_model: ask the model for the docstring; False derives every skeleton.
    """
    texts: list[str | None] = [None] * len(problems)
    if use_model and problems:
        samples = sampler.sample([skeleton_prompt(p) for p in problems], 1, temperature=0.0,
                                 seed=seed, max_new_tokens=max_new_tokens,
                                 stop=list(SKELETON_STOP), prefix=SKELETON_PREFIX)
        texts = [g[0].text for g in samples]
    kept, dropped = [], []
    for p, text in zip(problems, texts):
        skeleton, source, why = _first_valid(p, text)
        if skeleton is None:
            dropped.append(Dropped("skeletons", p.id, why, text or ""))
            continue
        p.skeleton, p.skeleton_source = skeleton, source + (f": {why}" if why else "")
        kept.append(p)
    return kept, dropped


def _first_valid(p: Problem, text: str | None) -> tuple[str | None, str, str]:
    """(skeleton, source, note): the model's docstring if it qualifies (mended when it
    can be: :func:`ucoder.ipc.docstrings.repair_docstring`), else derived."""
    why = "model not asked"
    if text is not None:
        try:
            doc = repair_docstring(parse_docstring(text), p.entry_point,
                                   cut_off=_UNCLOSED.fullmatch(text) is not None)
            skeleton = build_skeleton(p, doc)
            check_skeleton(skeleton, p.entry_point)
            return skeleton, "model", ""
        except ParseError as err:  # no docstring, code in it, cut off beyond repair...
            why = str(err)
    try:
        skeleton = build_skeleton(p, repair_docstring(derived_docstring(p), p.entry_point))
        check_skeleton(skeleton, p.entry_point)
    except ParseError as err:
        return None, "derived", str(err)
    return skeleton, "derived", why
