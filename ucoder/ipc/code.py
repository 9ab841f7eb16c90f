"""Static checks of model-written code with ``ast`` (nothing here executes anything).

Signatures, examples, test snippets and candidate solutions are parsed, never run; a
check that fails raises :class:`ParseError` whose message is the drop reason.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re

TYPING_NAMES = ("Any", "Callable", "Dict", "FrozenSet", "Iterable", "Iterator", "List",
                "Optional", "Sequence", "Set", "Tuple", "Union")
_DEF = re.compile(r"(?:def\s+)?([A-Za-z_]\w*)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)"
                  r"(\s*->\s*[^:\n`]+)?")


class ParseError(ValueError):
    """A model answer that cannot be used; the message is the drop reason."""


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def find_signature(text: str) -> str | None:
    """The first ``def name(args) -> type`` in ``text`` that parses (``def`` optional)."""
    for match in _DEF.finditer(text.replace("`", " ")):
        name, args, ret = match.group(1), match.group(2), (match.group(3) or "").strip()
        if keyword.iskeyword(name) or name in ("print", "assert"):
            continue
        signature = f"def {name}({args.strip()})" + (f" {ret}" if ret else "")
        if parses(signature + ":\n    pass\n"):
            return signature
    return None


def check_signature(signature: str) -> str:
    """The function name of a usable signature; raises ParseError otherwise."""
    try:
        node = ast.parse(signature + ":\n    pass\n").body[0]
    except (SyntaxError, ValueError, IndexError) as err:
        raise ParseError("signature does not parse") from err
    if not isinstance(node, ast.FunctionDef):
        raise ParseError("signature is not a function definition")
    if hasattr(builtins, node.name):
        raise ParseError(f"function name {node.name!r} shadows a builtin")
    if node.args.args and node.args.args[0].arg in ("self", "cls"):
        raise ParseError("a method (self/cls), not a function")
    if not (node.args.args or node.args.posonlyargs or node.args.vararg):
        raise ParseError("function takes no arguments (tests need inputs)")
    return node.name


def typing_imports(signature: str) -> str:
    """``from typing import ...`` for the typing names a signature uses ('' if none)."""
    used = [n for n in TYPING_NAMES if re.search(rf"\b{n}\b", signature)]
    return f"from typing import {', '.join(used)}" if used else ""


def calls_function(node: ast.AST, name: str) -> bool:
    """Whether ``node`` contains a call of the plain name ``name``."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
               for n in ast.walk(node))


def example_to_assert(line: str, entry_point: str) -> str | None:
    """``f(3) == 9`` / ``f(3) -> 9`` / ``f(3) returns 9`` as ``assert f(3) == 9``, or None
    (the one example parser: :func:`ucoder.ipc.docstrings.example_to_assert`)."""
    from ucoder.ipc.docstrings import example_to_assert as parse  # it imports ParseError

    return parse(line, entry_point)


def split_statements(text: str) -> list[str]:
    """Statements of ``text``: by ``ast`` when it all parses, else line by line."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return [line.strip() for line in text.splitlines() if line.strip()]
    return [ast.get_source_segment(text, n) or "" for n in tree.body]


def check_test(snippet: str, entry_point: str, arity: tuple[int, int] | None = None) -> str:
    """A normalised test snippet (an assert or an expression calling the entry point).

    ``print(f(x))`` becomes ``f(x)``. Rejected (ParseError with the reason): what does not
    parse, is not one assert/expression, never calls the entry point, uses a name it does
    not define (``f(input_list)``), or calls the function with a number of positional
    arguments outside ``arity`` (min, max) when given.
    """
    if snippet.lstrip().startswith("#"):
        raise ParseError("comment")
    try:
        tree = ast.parse(snippet.strip())
    except (SyntaxError, ValueError, RecursionError) as err:
        raise ParseError("does not parse") from err
    if len(tree.body) != 1:
        raise ParseError("not a single statement")
    node = tree.body[0]
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
            isinstance(node.value.func, ast.Name) and node.value.func.id == "print" and \
            len(node.value.args) == 1:
        node = ast.Expr(node.value.args[0])
    if not isinstance(node, (ast.Assert, ast.Expr)):
        raise ParseError("not an assert or an expression")
    if not calls_function(node, entry_point):
        raise ParseError(f"does not call {entry_point}")
    free = undefined_names(node, entry_point)
    if free:
        raise ParseError(f"uses undefined name {free[0]}")
    if arity is not None:
        for call in entry_calls(node, entry_point):
            if any(isinstance(a, ast.Starred) for a in call.args) or call.keywords:
                continue
            if not arity[0] <= len(call.args) <= arity[1]:
                raise ParseError(f"calls {entry_point} with {len(call.args)} arguments, "
                                 f"signature takes {arity[0]}-{arity[1]}")
    return ast.unparse(node)


def undefined_names(node: ast.AST, entry_point: str) -> list[str]:
    """Names read in ``node`` that neither it, the builtins nor ``entry_point`` define."""
    bound = {entry_point, *TYPING_NAMES}
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            bound.add(n.id)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
    return sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                   and isinstance(n.ctx, ast.Load) and n.id not in bound
                   and not hasattr(builtins, n.id)})


def entry_calls(node: ast.AST, entry_point: str) -> list[ast.Call]:
    """The calls of ``entry_point`` in ``node``, outermost first."""
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == entry_point]


def arity_of(source: str, entry_point: str) -> tuple[int, int] | None:
    """(min, max) positional arguments ``entry_point`` accepts in ``source`` (a skeleton)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return None
    func = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                 and n.name == entry_point), None)
    if func is None:
        return None
    args = func.args
    positional = len(args.posonlyargs) + len(args.args)
    return positional - len(args.defaults), (10**6 if args.vararg else positional)


def inputs_of(test: str, entry_point: str) -> list[str]:
    """The calls of the entry point a test makes, as expressions, outermost only
    (``assert 8 == f(2)`` -> ``["f(2)"]``; ``f(f(1))`` -> ``["f(f(1))"]``)."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, RecursionError):
        return []
    calls = entry_calls(tree, entry_point)
    inner = {id(n) for c in calls for n in ast.walk(c) if n is not c}
    return [ast.unparse(c) for c in calls if id(c) not in inner]


def extract_solution(text: str, entry_point: str) -> str:
    """The clean code of a candidate that started inside a ```python fence.

    The text up to the closing fence, normalised by
    :func:`ucoder.ipc.normalize.normalize_solution`: the last definition of
    ``entry_point`` and the imports, helpers and constants it uses, nothing else. An
    unfinished trailing statement that does not define ``entry_point`` is cut first
    (:func:`ucoder.ipc.normalize.complete_prefix`). Raises ParseError (the drop reason)
    when that is not possible.
    """
    # Imported here: normalize builds on this module (ParseError).
    from ucoder.ipc.normalize import complete_prefix, normalize_solution

    code = text.split("```", 1)[0].rstrip() + "\n"
    return normalize_solution(complete_prefix(code, entry_point), entry_point)
