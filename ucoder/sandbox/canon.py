"""Canonical reprs and behaviour hashes (stdlib only: imported inside the isolation too).

Two candidates that behave alike must get equal hashes, so the repr is made independent
of things that differ between runs of the same behaviour: set and dict ordering (sorted
by canonical repr), memory addresses in default reprs (``at 0x7f..`` becomes
``at 0x?``) and cycles (``...``). The repr is built with a budget so a huge value costs
bounded time; the hash covers the budgeted text (``HASH_CHARS``), the stored output a
shorter prefix.

:func:`genuine` is the check every test result goes through (see its docstring): a
candidate must not pass a test by returning an object that answers every comparison,
truth test or repr the way the test wants.
"""

from __future__ import annotations

import re
from _blake2 import blake2b as _blake2b  # not via hashlib, which loads OpenSSL
from collections import Counter, OrderedDict, defaultdict, deque

HASH_CHARS = 65536
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
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


class _Budget(Exception):
    pass


def canonical_repr(value: object, limit: int = HASH_CHARS) -> str:
    """A deterministic repr of ``value``, at most about ``limit`` characters."""
    parts: list[str] = []
    size = [0]

    def put(text: str) -> None:
        parts.append(text)
        size[0] += len(text)
        if size[0] > limit:
            raise _Budget

    def walk(v: object, stack: set[int]) -> None:
        if isinstance(v, _SCALARS) and type(v) in _SCALARS:
            put(_scalar(v))
            return
        if id(v) in stack:
            put("...")
            return
        t = type(v)
        if t in (list, tuple, set, frozenset, dict):
            stack.add(id(v))
            if t is dict:
                items = sorted(v.items(), key=lambda kv: canonical_repr(kv[0], 256))
                put("{")
                for n, (k, val) in enumerate(items):
                    put(", " if n else "")
                    walk(k, stack)
                    put(": ")
                    walk(val, stack)
                put("}")
            else:
                elems = sorted(v, key=lambda e: canonical_repr(e, 256)) if t in (
                    set, frozenset) else v
                open_, close = {list: "[]", tuple: "()", set: "{}", frozenset: "{}"}[t]
                put((t.__name__ + "(" if t is frozenset else "") + open_)
                for n, e in enumerate(elems):
                    put(", " if n else "")
                    walk(e, stack)
                put(",)" if t is tuple and len(v) == 1 else close)
                put(")" if t is frozenset else "")
            stack.discard(id(v))
            return
        put(_other(v))

    try:
        walk(value, set())
    except _Budget:
        parts.append("…")
    except RecursionError:
        parts.append("<too deep>")
    return "".join(parts)


def _scalar(v: object) -> str:
    try:
        return repr(v)
    except ValueError:  # int too large for str() (sys.set_int_max_str_digits)
        return f"<int of {v.bit_length()} bits, hash {hash(v) & 0xFFFFFFFF:08x}>"


def _other(v: object) -> str:
    try:
        text = repr(v)
    except Exception as exc:  # a candidate's __repr__ may raise
        return f"<{type(v).__name__}: repr raised {type(exc).__name__}>"
    if not isinstance(text, str):
        return f"<{type(v).__name__}>"
    return _ADDRESS.sub(" at 0x?", text)


def behaviour_hash(text: str) -> str:
    """A short stable hash (BLAKE2b, 8 bytes as 16 hex digits) of a canonical repr.

    BLAKE2b is CPython's own C code; OpenSSL's SHA-256 would set up OpenSSL state in
    every job process, which costs more than the rest of the hashing.
    """
    return _blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
