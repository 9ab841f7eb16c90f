"""The one parser of worked examples in prose and docstrings, and docstring wholeness.

Examples come in several forms (``>>> f(2)`` then ``4`` on the next line; ``f(2) == 4``;
``f(2) ==> 4``; ``f(2) -> 4``; ``f(2) => 4``; ``f(2) → 4``; ``f(2) should return 4``;
``f(2) returns 4``; ``f(2) is 4``). :func:`find_examples` reads them all, with the lines
they occupy, for problem statements (:func:`example_to_assert`), generated skeletons,
benchmark prompts (:mod:`ucoder.evaluation.examples`) and the clean-pair check. A call
counts only when all its arguments are literals (``f(n - 1)`` in prose is no example),
and an expected value only when it is a literal. Nothing here executes anything.

:func:`docstring_defect` says why a docstring is not whole (a summary under 3 words, a
sentence cut off, an empty ``Args:``/``Returns:`` section); :func:`repair_docstring`
mends what can be mended (cuts a truncated block back to its last full sentence, drops
an empty section) and raises :class:`ParseError` for the rest.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass

from ucoder.ipc.code import ParseError

# What may stand between a call and its expected value.
_ARROW = re.compile(r"\s*(?:==>|=>|==|->|\u279e|\u2192|=|should\s+return|returns?|gives|is)"
                    r"\s*")
_SECTION = re.compile(r"^\s*(args|arguments|parameters|params|returns?|raises|yields|"
                      r"examples?|for example|notes?)\s*:\s*(.*)$", re.IGNORECASE)
_NEEDS_BODY = ("args", "arguments", "parameters", "params", "return", "returns", "raises",
               "yields")
_DANGLING = {"a", "an", "the", "of", "to", "and", "or", "with", "in", "for", "by", "from",
             "that", "which", "is", "are", "be", "if", "as", "on", "at", "its", "their"}
_PAIRS = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Example:
    """One worked example found in a text.

    Attributes:
        call: the call as written (``f(2)``).
        expected: its expected value as written, or None when no readable value is shown.
        start, end: character span of the example (call through value) in the text.
        value_start: where the value starts (== ``end`` when there is none).
        alone: whether the example stands on lines of its own (``Example: f(2) == 4``,
            a doctest) rather than inside a sentence.
    """

    call: str
    expected: str | None
    start: int
    end: int
    value_start: int
    alone: bool

    def as_test(self) -> str:
        """``assert call == expected``, or the bare call when no value is shown."""
        return f"assert {self.call} == {self.expected}" if self.expected is not None \
            else self.call

    def lines(self, text: str) -> range:
        """The 0-based line numbers of ``text`` the example spans."""
        return range(text.count("\n", 0, self.start), text.count("\n", 0, self.end) + 1)


def find_examples(text: str, entry_point: str) -> list[Example]:
    """Every call of ``entry_point`` with literal arguments in ``text``, in order."""
    out: list[Example] = []
    for match in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\(", text):
        end = _close(text, match.end() - 1)
        if end is None:
            continue
        call = text[match.start():end]
        if not _literal_call(call):
            continue
        expected, value_start, value_end = _expected(text, end)
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", value_end)
        around = text[line_start:match.start()] + text[value_end:len(text) if line_end < 0
                                                       else line_end]
        alone = len(re.findall(r"[A-Za-z]{2,}", around.replace(">>>", ""))) <= 2
        out.append(Example(call, expected, match.start(), value_end, value_start, alone))
    return out


def example_to_assert(line: str, entry_point: str) -> str | None:
    """``f(3) == 9`` / ``f(3) -> 9`` / ``f(3) returns 9`` as ``assert f(3) == 9``, or None."""
    text = line.replace("`", "")
    found = [e for e in find_examples(text, entry_point) if e.expected is not None]
    return found[0].as_test() if found else None


def _close(text: str, open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, min(len(text), open_at + 400)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return None


def _literal_call(call: str) -> bool:
    """A call with arguments, all literal values."""
    try:
        node = ast.parse(call, mode="eval").body
        if not (node.args or node.keywords):
            return False  # "write f() that ..." in prose
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (SyntaxError, ValueError, TypeError, AttributeError, RecursionError, MemoryError):
        return False
    return True


def literal(text: str) -> str | None:
    """``text`` (trimmed of a trailing period/comma) if it is a plain literal value."""
    text = text.strip().rstrip(".,;")
    if not text or len(text) > 300:
        return None
    try:
        ast.literal_eval(text)  # parses it too
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None
    return text


def _leading_literal(text: str) -> str | None:
    """The longest start of ``text`` that is a literal (``4 because ...`` -> ``4``)."""
    whole = literal(text)
    if whole is not None:
        return whole
    cuts = [m.start() for m in re.finditer(r"[\s,;]", text[:300])]
    for cut in reversed(cuts[:40]):
        value = literal(text[:cut])
        if value is not None:
            return value
    return None


def _expected(text: str, end: int) -> tuple[str | None, int, int]:
    """(value, its start, its end) written after the call: on the same line after an
    arrow, or on the next line after a ``>>>`` call (doctest); (None, end, end) if none."""
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    rest = text[end:line_end]
    arrow = _ARROW.match(rest)
    if arrow and rest[arrow.end():].strip():
        value = _leading_literal(rest[arrow.end():])
        if value is None:
            return None, end, end
        start = end + arrow.end() + (len(rest[arrow.end():]) - len(rest[arrow.end():].lstrip()))
        return value, start, start + len(value)
    if rest.strip() or line_end >= len(text):
        return None, end, end
    if not text[text.rfind("\n", 0, end) + 1:end].lstrip().startswith(">>>"):
        return None, end, end
    next_end = text.find("\n", line_end + 1)
    next_end = len(text) if next_end < 0 else next_end
    nxt = text[line_end + 1:next_end]
    value = literal(nxt) if nxt.strip() and not nxt.strip().startswith(">>>") else None
    if value is None:
        return None, end, end
    start = line_end + 1 + len(nxt) - len(nxt.lstrip())
    return value, start, start + len(value)


def prose_lines(doc: str, entry_point: str) -> list[str]:
    """The docstring without its example lines (and without a header left empty)."""
    lines = doc.splitlines()
    drop = {i for e in find_examples(doc, entry_point) if e.alone for i in e.lines(doc)}
    drop |= {i for i, x in enumerate(lines) if x.lstrip().startswith(">>>")}
    kept = [x for i, x in enumerate(lines) if i not in drop]
    out = []
    for i, line in enumerate(kept):
        header = _SECTION.match(line)
        later = next((x for x in kept[i + 1:] if x.strip()), None)
        if header and header.group(1).lower().startswith(("example", "for example")) \
                and not header.group(2).strip() and (later is None or _SECTION.match(later)):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


@dataclass
class _Block:
    name: str  # "" for the summary, else the section's name in lower case
    header: str  # the header line up to its colon ("    Returns:"); "" for the summary
    lines: list[str]  # content; text after the header's colon is the first line
    inline: bool = False  # whether lines[0] is that text


def _blocks(lines: list[str]) -> list[_Block]:
    """The summary, then one block per ``Args:``/``Returns:``/... section."""
    blocks = [_Block("", "", [])]
    for line in lines:
        header = _SECTION.match(line)
        if header:
            inline = bool(header.group(2).strip())
            blocks.append(_Block(header.group(1).lower(), line[:header.start(2)].rstrip(),
                                 [header.group(2)] if inline else [], inline))
        else:
            blocks[-1].lines.append(line)
    return blocks


def _truncated(lines: list[str]) -> bool:
    text = " ".join(x.strip() for x in lines if x.strip())
    if not text:
        return False
    for open_, close in _PAIRS.items():
        if text.count(open_) > text.count(close):
            return True
    words = re.findall(r"[A-Za-z]+", text.split()[-1])
    return text.endswith(("-", ",", "(", "[", "{", ":", "/")) or \
        bool(words and words[-1].lower() in _DANGLING and text[-1].isalpha())


def docstring_defect(doc: str, entry_point: str = "") -> str | None:
    """Why ``doc`` is not a whole docstring, or None (examples are not judged here)."""
    blocks = _blocks(prose_lines(doc, entry_point) if entry_point else doc.splitlines())
    if len(" ".join(blocks[0].lines).split()) < 3:
        return "summary under 3 words"
    for b in blocks:
        if b.name in _NEEDS_BODY and not any(x.strip() for x in b.lines):
            return f"empty {b.name.capitalize()} section"
        if _truncated(b.lines):
            return f"{(b.name or 'summary').capitalize()} is cut off"
    return None


def _sentence_cut(lines: list[str]) -> list[str]:
    """``lines`` cut after the last full sentence ('.', '!' or '?' ending a word)."""
    for i in range(len(lines) - 1, -1, -1):
        ends = [m.end() for m in re.finditer(r"(?<=[A-Za-z)\]'\"])[.!?](?=\s|$)", lines[i])]
        if ends:
            return lines[:i] + [lines[i][:ends[-1]]]
    return []


def repair_docstring(doc: str, entry_point: str = "", *, cut_off: bool = False) -> str:
    """``doc`` without its example lines, empty sections dropped and a cut-off block cut
    back to its last full sentence (a section with none left is dropped).

    Args:
        doc: the docstring's text.
        entry_point: the function its examples call.
        cut_off: the text is known to stop early (the model's docstring never closed):
            its last block is cut back to a full sentence unless it ends one.

    Raises:
        ParseError: "docstring broken beyond repair: <defect>" when it is still not whole.
    """
    out = []
    blocks = _blocks(prose_lines(inspect.cleandoc(doc), entry_point))
    for b in blocks:
        lines = list(b.lines)
        while lines and not lines[-1].strip():
            lines.pop()
        unended = cut_off and b is blocks[-1] and lines and \
            not lines[-1].rstrip().endswith((".", "!", "?"))
        if unended or _truncated(lines):
            lines = _sentence_cut(lines)
        if b.name and not any(x.strip() for x in lines):
            continue  # an empty section, or one with no full sentence
        if b.inline:
            lines = [f"{b.header} {lines[0].strip()}"] + lines[1:]
        elif b.name:
            lines = [b.header] + lines
        out.append("\n".join(lines).strip("\n"))
    fixed = "\n\n".join(out)
    defect = docstring_defect(fixed)
    if defect:
        raise ParseError(f"docstring broken beyond repair: {defect}")
    return fixed
