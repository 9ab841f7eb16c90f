"""One normalisation of model-written code, for the round and for benchmark scoring.

A small model writes the function it was asked for, then often a second copy of it,
prints, asserts, a ``__main__`` block or unrelated functions. :func:`normalize_solution`
keeps what Python would run when the entry point is called: the *last* top-level
definition of the entry point (the one a module binds last), and the imports, helper
functions/classes and module constants it uses, transitively; nothing else. Scoping is
read with :mod:`symtable` (the compiler's own tables), so locals, comprehension
variables and closures never count as uses of a module name. Nothing here executes code.

:func:`strip_top_level` is the weaker form for code without a known entry point (a
benchmark completion): it only drops top-level calls, asserts and the ``__main__`` block.
"""

from __future__ import annotations

import ast
import re
import symtable

from ucoder.ipc.code import ParseError

_BINDING = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
            ast.Assign, ast.AnnAssign)


def parse_module(code: str) -> ast.Module:
    """``ast.parse`` that raises :class:`ParseError` ("does not parse") on any failure."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ParseError("does not parse") from err


def complete_prefix(code: str, entry_point: str) -> str:
    """``code`` cut before an unfinished trailing top-level statement (a sample cut off by
    the token limit while writing a second function), when what is cut away does not
    define ``entry_point``; ``code`` itself when it parses or cannot be saved so."""
    try:
        ast.parse(code)
        return code
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    lines = code.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1].strip() and line[:1] not in "#)]}"
              and not re.match(r"(else|elif|except|finally)\b", line)]
    for i in reversed(starts[1:]):
        tail = "".join(lines[i:])
        if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", tail):
            break
        try:
            ast.parse("".join(lines[:i]))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        return "".join(lines[:i])
    return code


def is_main_block(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either side of the comparison)."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and any(
        isinstance(n, ast.Name) and n.id == "__name__"
        for n in [node.test.left, *node.test.comparators])


def bound_names(node: ast.stmt) -> list[str]:
    """The module names a top-level statement binds (imports, defs, plain assignments)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _globals_of(table: symtable.SymbolTable) -> set[str]:
    names = {s.get_name() for s in table.get_symbols() if s.is_global()}
    for child in table.get_children():
        names |= _globals_of(child)
    return names


def _module_reads(node: ast.stmt) -> set[str]:
    """Names read in module scope by ``node`` itself (decorators, defaults, annotations,
    bases, an assignment's value); function bodies are left to :mod:`symtable`."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        parts = [*node.decorator_list, *a.defaults, *(d for d in a.kw_defaults if d)]
        parts += [x.annotation for x in [*a.posonlyargs, *a.args, *a.kwonlyargs,
                                         a.vararg, a.kwarg] if x is not None and x.annotation]
        parts += [node.returns] if node.returns else []
    elif isinstance(node, ast.ClassDef):
        parts = [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
    else:
        parts = [node]
    return {n.id for p in parts for n in ast.walk(p)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _uses(code: str, tree: ast.Module) -> dict[int, set[str]]:
    """Per top-level statement (by index): the module names it reads."""
    tables = {(t.get_name(), t.get_lineno()): t
              for t in symtable.symtable(code, "<candidate>", "exec").get_children()}
    uses = {}
    for i, node in enumerate(tree.body):
        names = _module_reads(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            table = tables.get((node.name, node.lineno))
            if table is not None:
                names |= _globals_of(table)
        uses[i] = names
    return uses


def _is_stub(func: ast.FunctionDef) -> bool:
    for node in func.body:
        if isinstance(node, ast.Pass):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring or ...
        if isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node):
            continue
        return False
    return True


def kept_statements(code: str, entry_point: str) -> tuple[ast.Module, list[int], set[str]]:
    """The parsed code, the indices of the top-level statements to keep and the module
    names those statements read.

    Raises ParseError (the drop reason) when the code does not parse, does not define
    ``entry_point`` as a plain function, rebinds it after its definition, or the last
    definition is only a stub.
    """
    tree = parse_module(code)
    last: dict[str, int] = {}
    for i, node in enumerate(tree.body):
        if isinstance(node, _BINDING):
            for name in bound_names(node):
                last[name] = i
    entry = last.get(entry_point)
    if entry is None:
        raise ParseError(f"no function {entry_point}")
    func = tree.body[entry]
    if isinstance(func, ast.AsyncFunctionDef):
        raise ParseError(f"{entry_point} is async")
    if not isinstance(func, ast.FunctionDef):
        raise ParseError(f"{entry_point} is rebound after its definition")
    if _is_stub(func):
        raise ParseError("function body is only a stub")
    star = [i for i, n in enumerate(tree.body) if isinstance(n, ast.ImportFrom)
            and any(a.name == "*" for a in n.names)]
    try:
        uses = _uses(code, tree)
    except (SyntaxError, ValueError, RecursionError) as err:  # symtable's own checks
        raise ParseError(f"does not compile ({type(err).__name__})") from err
    keep, todo = set(), [entry]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo += [last[name] for name in uses[i] if name in last]
        if any(name not in last for name in uses[i]):
            todo += star  # an unbound name may come from a ``from m import *``
    return tree, sorted(keep), set().union(*(uses[i] for i in keep))


def normalize_solution(code: str, entry_point: str) -> str:
    """The clean form of a candidate: imports first, then the kept definitions in order.

    Raises:
        ParseError: the reason the candidate cannot be normalised (see
            :func:`kept_statements`).
    """
    tree, keep, used = kept_statements(code, entry_point)
    nodes = [tree.body[i] for i in keep]
    nodes = [_used_aliases(n, used) for n in nodes]
    imports = [n for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))]
    rest = [n for n in nodes if not isinstance(n, (ast.Import, ast.ImportFrom))]
    lines = code.splitlines()
    shared = _shared_lines(tree)
    head = "\n".join(_source(n, lines, shared) for n in imports)
    body = "\n\n".join(_source(n, lines, shared) for n in rest)
    return (head + "\n\n" + body if head else body).strip("\n") + "\n"


def _used_aliases(node: ast.stmt, used: set[str]) -> ast.stmt:
    """An import cut to the names that are used (``import math, os`` -> ``import math``)."""
    if not isinstance(node, (ast.Import, ast.ImportFrom)) or len(node.names) < 2:
        return node
    names = [a for a in node.names
             if a.name == "*" or (a.asname or a.name).split(".")[0] in used]
    if len(names) == len(node.names):
        return node
    new = ast.Import(names=names) if isinstance(node, ast.Import) else \
        ast.ImportFrom(module=node.module, names=names, level=node.level)
    new.rebuilt = True  # its text is no longer the source's
    return ast.copy_location(new, node)


def _shared_lines(tree: ast.Module) -> set[int]:
    seen: dict[int, int] = {}
    for node in tree.body:
        for line in {node.lineno, node.end_lineno or node.lineno}:
            seen[line] = seen.get(line, 0) + 1
    return {line for line, k in seen.items() if k > 1}


def _source(node: ast.stmt, lines: list[str], shared: set[int]) -> str:
    """The node's own text (comments inside it kept); ``ast.unparse`` when it shares a
    line with another statement (``import os; import sys``)."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno or node.lineno
    if start in shared or end in shared or node.col_offset or getattr(node, "rebuilt", False):
        return ast.unparse(node)
    return "\n".join(lines[start - 1:end]).rstrip()


def strip_top_level(code: str) -> str:
    """Drop top-level statements that only run or check things (calls, asserts, the
    ``__main__`` block); code that does not parse is returned unchanged."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code
    drop: list[tuple[int, int]] = []
    for node in tree.body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if (isinstance(node, ast.Expr) and not docstring) or isinstance(node, ast.Assert) \
                or is_main_block(node):
            drop.append((node.lineno, node.end_lineno or node.lineno))
    if not drop:
        return code
    return "".join(line for i, line in enumerate(code.splitlines(keepends=True), start=1)
                   if not any(a <= i <= b for a, b in drop))
