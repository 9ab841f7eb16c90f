"""What a test may look at: genuine values only (stdlib only: runs inside the isolation).

A candidate must not pass a test by returning an object that answers every comparison,
truth test or repr the way the test wants (an equality hack). :func:`genuine` is
the check; :func:`guard_asserts` rewrites a test's ``assert`` statements so that each
value their outcome rests on goes through it (the harness binds it as :data:`GUARD` in
the namespace the tests run in, after the candidate's code has run). The harness also
passes every expression test's value through it before taking its canonical repr.
"""

from __future__ import annotations

import ast
from collections import Counter, OrderedDict, defaultdict, deque

GUARD = "__ucoder_genuine__"  # the name guarded asserts call genuine() by
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_EXACT_SCALARS = frozenset(_SCALARS)
# Py_TPFLAGS_IMMUTABLETYPE: CPython sets it on types written in C, never on a class
# statement's, and such a type's methods cannot be replaced at run time.
_IMMUTABLE = 1 << 8
_C_ITERABLE_LEAVES = frozenset({bytearray, range})  # compared by C code on their own data
_SEQUENCES = frozenset({list, tuple, set, frozenset, deque})
_MAPPINGS = frozenset({dict, OrderedDict, defaultdict})
# Read through ``type`` itself, bound before any candidate runs: a metaclass cannot fake them.
_flags = type.__dict__["__flags__"].__get__
_qualname = type.__dict__["__qualname__"].__get__
_dict_items, _dict_copy, _hasattr = dict.items, dict.copy, hasattr


class NotGenuine(AssertionError):
    """A test looked at a value whose class the candidate could have written."""


def genuine(value: object) -> object:
    """``value`` if a test may compare, truth-test or repr it; raises :class:`NotGenuine`.

    Genuine: an instance of a class implemented in C (the candidate can neither define
    one nor patch its methods) that is not a container, such as ``None``, ``bool``,
    ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``range``, ``numpy.float64`` or
    a function; and ``list``, ``tuple``, ``set``, ``frozenset``, ``dict``, ``deque``,
    ``OrderedDict`` and ``defaultdict`` (exact types) whose items are genuine, checked
    recursively. A ``Counter`` (written in Python, so patchable) comes back as a plain
    ``dict`` of its data. Not genuine: instances of classes written in Python, subclasses
    of builtins among them (whatever ``__eq__``, ``__hash__``, ``__bool__`` or
    ``__repr__`` they define), and other C iterables whose comparison would reach items
    unchecked (generators, dict views, numpy arrays).

    Comparisons between genuine values keep Python's own rules (``1 == 1.0`` and
    ``True == 1`` hold), so an honest solution passes exactly as it would unchecked.
    """
    if type(value) in _EXACT_SCALARS:  # the common case, first
        return value
    return _genuine(value, set())


def _genuine(v: object, seen: set[int]) -> object:
    t = type(v)
    if t in _EXACT_SCALARS:
        return v
    if t in _SEQUENCES or t in _MAPPINGS or t is Counter:
        if id(v) in seen:  # a cycle: its items are being checked further up
            return v
        seen.add(id(v))
        try:
            return _container(v, t, seen)
        finally:
            seen.discard(id(v))
    if _flags(t) & _IMMUTABLE and (t in _C_ITERABLE_LEAVES or not _hasattr(t, "__iter__")):
        return v
    try:
        name = _qualname(t)
    except Exception:
        name = "?"
    raise NotGenuine(f"{name} object is not a genuine value (tests take builtin types, checked "
                     "through containers; not classes written in Python)")


def _container(v: object, t: type, seen: set[int]) -> object:
    if t is Counter:
        return _genuine(_dict_copy(v), seen)  # its data, never its (patchable) methods
    if t in _MAPPINGS:
        pairs = [(_genuine(k, seen), val, _genuine(val, seen)) for k, val in _dict_items(v)]
        if all(new is val for _, val, new in pairs):
            return v
        return {k: new for k, _, new in pairs}
    items = [(e, _genuine(e, seen)) for e in v]
    if all(new is e for e, new in items):
        return v
    return t(new for _, new in items)  # a Counter inside became a dict


def guard_asserts(src: str, name: str) -> ast.Module:
    """The parsed test ``src`` with every ``assert`` guarded (see :class:`_GuardAsserts`)."""
    return ast.fix_missing_locations(_GuardAsserts().visit(ast.parse(src, name)))


class _GuardAsserts(ast.NodeTransformer):
    """Rewrite a test's asserts so that every value their outcome rests on is genuine.

    In each ``assert`` (at any depth: HumanEval's are inside ``check``) the test's own
    value, each operand of ``and``/``or``/``not``/``if-else`` and each operand of every
    comparison except ``is``/``is not`` (identity cannot be faked) pass through
    :func:`genuine` first, so comparison and truth test run on builtin code only.
    Truth tests and comparisons made inside a called function (``all``, ``any``,
    ``math.isclose``) are not seen.
    """

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        node.test = _guard(_GuardValues().visit(node.test))
        return node


class _GuardValues(ast.NodeTransformer):
    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        self.generic_visit(node)
        if not all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            node.left = _guard(node.left)
            node.comparators = [_guard(c) for c in node.comparators]
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.BoolOp:
        self.generic_visit(node)
        node.values = [_guard(v) for v in node.values]
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.UnaryOp:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = _guard(node.operand)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.IfExp:
        self.generic_visit(node)
        node.test = _guard(node.test)
        return node


def _guard(expr: ast.expr) -> ast.expr:
    return ast.copy_location(ast.Call(ast.Name(GUARD, ast.Load()), [expr], []), expr)
