"""Canonical reprs and behaviour hashes (stdlib only: imported inside the isolation too).

Two candidates that behave alike must get equal hashes, so the repr is made independent
of things that differ between runs of the same behaviour: set and dict ordering (sorted
by canonical repr), memory addresses in default reprs (``at 0x7f..`` becomes
``at 0x?``) and cycles (``...``). The repr is built with a budget so a huge value costs
bounded time; the hash covers the budgeted text (``HASH_CHARS``), the stored output a
shorter prefix.
"""

from __future__ import annotations

import re
from _blake2 import blake2b as _blake2b  # not via hashlib, which loads OpenSSL

HASH_CHARS = 65536
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


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
