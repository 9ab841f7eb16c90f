"""Exact and near-duplicate detection for generated problems.

Two problems are *exact* duplicates when their normalised description and signature
are equal, and *near* duplicates when they define a function of the same name, or when
their descriptions share most word trigrams (Jaccard >= threshold). A small model
repeats itself and copies the prompt's example; the caller can seed the detector with
that example so copies are dropped too, and with earlier rounds' problems
(:meth:`Deduplicator.avoid`) so a problem already trained on is not made again.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

NEAR_THRESHOLD = 0.6


def normalize(text: str) -> str:
    """Lower case, words only, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Word n-grams of the normalised text (the words themselves for short texts)."""
    words = normalize(text).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _interface(signature: str) -> str:
    """The function's name: the same name with other parameters is still the same task
    for a small model (three ``count_digits`` in one round)."""
    try:
        node = ast.parse(signature + ":\n    pass\n").body[0]
    except (SyntaxError, ValueError, IndexError):
        return normalize(signature)
    if not isinstance(node, ast.FunctionDef):
        return normalize(signature)
    return node.name


class Deduplicator:
    """Remembers the problems seen so far; :meth:`check` says whether a new one repeats.

    Args:
        threshold: description-trigram Jaccard at or above which two problems are
            near-duplicates.
    """

    def __init__(self, threshold: float = NEAR_THRESHOLD):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r} is not allowed; use a number in (0, 1]")
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._interfaces: dict[str, str] = {}
        self._shingles: list[tuple[str, set]] = []
        self._earlier: list[tuple[str, set]] = []

    def check(self, key: str, description: str, signature: str) -> str | None:
        """None if new (and remember it), else the drop reason naming the earlier item."""
        exact = normalize(description) + "|" + normalize(signature)
        if exact in self._exact:
            return f"exact duplicate of {self._exact[exact]}"
        interface = _interface(signature)
        if interface in self._interfaces:
            return f"near duplicate of {self._interfaces[interface]} (same function {interface})"
        grams = shingles(description)
        for other, other_grams in self._shingles:
            score = jaccard(grams, other_grams)
            if score >= self.threshold:
                return f"near duplicate of {other} (description overlap {score:.2f})"
        for other, other_grams in self._earlier:
            # An earlier text may be a whole prompt: measure how much of the new
            # description it contains, not the overlap of the two.
            score = len(grams & other_grams) / len(grams) if grams else 0.0
            if score >= self.threshold:
                return f"near duplicate of {other} (description overlap {score:.2f})"
        self._exact[exact] = key
        self._interfaces[interface] = key
        self._shingles.append((key, grams))
        return None

    def seed(self, items: Iterable[tuple[str, str, str]]) -> None:
        """Remember ``(key, description, signature)`` items without checking them."""
        for key, description, signature in items:
            self.check(key, description, signature)

    def avoid(self, texts: Iterable[str]) -> None:
        """Remember earlier problems so that new ones repeating them are dropped.

        Args:
            texts: earlier problems as text: descriptions, skeletons or whole prompts.
                Every ``def name(`` in a text bans that function name; a new
                description whose trigrams are mostly inside a text is a near duplicate.
        """
        for k, text in enumerate(texts):
            key = f"earlier problem {k}"
            for name in re.findall(r"\bdef\s+([A-Za-z_]\w*)\s*\(", text):
                self._interfaces.setdefault(name, key)
            self._earlier.append((key, shingles(text)))
