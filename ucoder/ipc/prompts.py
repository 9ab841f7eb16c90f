"""The prompt of every IPC stage and the parser of its answer.

The prompts are written for small instruct models (the embedded 135M one): each shows
one worked example of the answer format, and the caller passes a ``prefix`` that starts
the answer (``<PROBLEM_START>\\nTitle:``, ``Score:``, a docstring, ``assert f(``) so the
model only has to continue it. Parsers are lenient about layout (missing tags, markdown
bold, extra prose) and strict about content: they raise :class:`ParseError` with a
short reason, which the stage records as the item's drop reason.
"""

from __future__ import annotations

import re
import textwrap

from ucoder.ipc.code import (
    ParseError,
    check_signature,
    example_to_assert,
    find_signature,
    typing_imports,
)

CATEGORIES = ("basic algorithms", "natural-language instructions", "multi-domain tasks",
              "standard-library use", "competitive programming")
DIFFICULTIES = ("easy", "medium", "hard")
TOPICS = ("lists of numbers", "strings", "dictionaries", "prime numbers", "sorting",
          "words in a sentence", "matrices", "dates and times", "sets", "recursion",
          "binary numbers", "geometry", "money and prices", "grades of students",
          "temperatures", "intervals", "palindromes", "counting characters", "stacks",
          "tuples", "digits of a number", "searching", "text formatting", "games")

# -- stage 1: problems ------------------------------------------------------------------
PROBLEM_EXAMPLE = """<PROBLEM_START>
Title: Count vowels
Description: Return how many vowels (a, e, i, o, u) the string s contains.
Signature: def count_vowels(s: str) -> int
Example: count_vowels("hello") == 2
Hint: Loop over the characters.
<PROBLEM_END>"""
# What the function hands back. Crossed with the topics it gives 144 seeds, so two
# prompts on one topic still ask for different functions.
RESULT_KINDS = ("returns True or False", "returns a count", "returns a new list",
                "returns a string", "returns a dictionary", "returns one number")
PROBLEM_PROMPT = ("Write a new Python programming problem. Category: {category}. "
                  "Difficulty: {difficulty}. Topic: {topic}.{kind}\nUse exactly this "
                  "format:\n\n{example}\n\nNow write a different problem about {topic}.")
PROBLEM_PREFIX = "<PROBLEM_START>\nTitle:"
PROBLEM_STOP = ("<PROBLEM_END>", "```", "\n\n\n")
_FIELD = re.compile(r"^\W*(title|problem description|description|function signature|signature"
                    r"|examples?(?: input/output)?|hint)\W*?:\s*(.*)$", re.IGNORECASE)


def problem_prompt(category: str, difficulty: str, topic: str, kind: str = "") -> str:
    """The user prompt asking for one problem; ``kind``: what the function returns."""
    return PROBLEM_PROMPT.format(category=category, difficulty=difficulty, topic=topic,
                                 kind=f" The function {kind}." if kind else "",
                                 example=PROBLEM_EXAMPLE)


def parse_problem(text: str) -> dict:
    """Fields of a problem block: title, description, signature, entry_point, examples, hint.

    ``text`` is the whole answer including the prefix. Raises :class:`ParseError`.
    """
    body = text.split("<PROBLEM_START>", 1)[-1].split("<PROBLEM_END>", 1)[0]
    found: dict[str, list[str]] = {}
    key = None
    for line in body.splitlines():
        match = _FIELD.match(line)
        if match:
            label = match.group(1).lower()
            key = next(k for k in ("title", "description", "signature", "example", "hint")
                       if k in label)
            found.setdefault(key, []).append(match.group(2).strip().strip("*").strip())
        elif key is not None:
            found[key].append(line.strip())
    title = " ".join(found.get("title", [""])[:1]).strip(" *#`")
    description = " ".join(x for x in found.get("description", []) if x).strip()
    if not title:
        raise ParseError("no title")
    if len(description.split()) < 4:
        raise ParseError("no description (under 4 words)")
    signature = find_signature(" ".join(found.get("signature", [""])[:1])) or \
        find_signature(body)
    if signature is None:
        raise ParseError("no function signature that parses")
    entry_point = check_signature(signature)
    examples = []
    for line in found.get("example", []) + [x for x in body.splitlines() if entry_point in x]:
        example = example_to_assert(line, entry_point)
        if example and example not in examples:
            examples.append(example)
    hint = " ".join(found.get("hint", [""])[:1]).strip()
    return {"title": title, "description": description, "signature": signature,
            "entry_point": entry_point, "examples": examples[:3], "hint": hint}


def format_problem(p) -> str:
    """A problem as the tagged block the model writes (used in later prompts)."""
    lines = [f"Title: {p.title}", f"Description: {p.description}", f"Signature: {p.signature}"]
    lines += [f"Example: {e.removeprefix('assert ')}" for e in p.examples[:1]]
    if p.hint:
        lines.append(f"Hint: {p.hint}")
    return "<PROBLEM_START>\n" + "\n".join(lines) + "\n<PROBLEM_END>"


# -- stage 2: quality rating ------------------------------------------------------------
# Three anchors instead of one worked example: a single "Score: 6" with a reason was
# copied verbatim by the embedded model for every problem. The rating is read from the
# token probabilities after ``Score:`` (ucoder.ipc.rating), so no reason is asked for.
RATING_PROMPT = ("Is this programming problem clear, complete, and solvable by a function "
                 "with the given signature?\n\n{problem}\n\nRate it from 1 to 10:\n"
                 "10/10: clear and complete; the example is right.\n"
                 "5/10: solvable, but vague or the example is doubtful.\n"
                 "1/10: unusable: no real task, or it does not fit the signature.\n"
                 "Answer in the form Score: N/10")
RATING_PREFIX = "Score:"
# What follows the prefix for each score; "/10" ends the number, so "1" and "10" are
# different texts whatever the tokenizer does with digits.
RATING_SCORES = tuple(range(1, 11))
RATING_CONTINUATIONS = tuple(f" {k}/10" for k in RATING_SCORES)


def rating_prompt(problem) -> str:
    return RATING_PROMPT.format(problem=format_problem(problem))


def parse_rating(text: str) -> tuple[float, str]:
    """``(score in [1, 10], reason)`` from a written ``Score: 7\\nReason: ...``.

    The rating stage reads token probabilities instead; this reads a rating as text
    (e.g. one written by a backend without ``score``). Raises ParseError.
    """
    body = text.split(RATING_PREFIX, 1)[-1]
    match = re.match(r"\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(10|5|100))?", body)
    if match is None:
        raise ParseError("no score")
    if re.match(r"\s*-\s*\d", body[match.end():]):
        raise ParseError(f"copied the scale ({match.group(0).strip()}-...) instead of a score")
    score = float(match.group(1))
    if match.group(2):
        score = score * 10 / float(match.group(2))
    if not 1 <= score <= 10:
        raise ParseError(f"score {match.group(1)} outside 1-10")
    rest = body[match.end():]
    reason = rest.split("Reason:", 1)[1] if "Reason:" in rest else rest
    return score, " ".join(reason.strip().strip("*").split())[:200]


# -- stage 3: skeleton ------------------------------------------------------------------
SKELETON_PROMPT = ('Write the docstring of this Python function: a short summary of the task, '
                   'then "Args:" and "Returns:" sections. Example:\n```python\n'
                   'def count_vowels(s: str) -> int:\n    """Count the vowels (a, e, i, o, u) '
                   'in s.\n\n    Args:\n        s: the text to scan.\n\n    Returns:\n        '
                   'The number of vowels.\n    """\n```\n\n{problem}\n\nComplete the '
                   'function\'s docstring:\n```python\n{header}    """\n```')
SKELETON_PREFIX = "```python\n"
SKELETON_STOP = ("```",)


def skeleton_prompt(problem) -> str:
    return SKELETON_PROMPT.format(problem=format_problem(problem),
                                  header=skeleton_header(problem))


def skeleton_header(problem) -> str:
    """Imports and the ``def`` line: the fixed start of every skeleton."""
    imports = typing_imports(problem.signature)
    return (f"{imports}\n\n" if imports else "") + f"{problem.signature}:\n"


def build_skeleton(problem, docstring: str) -> str:
    """Header + docstring (re-indented) + the problem's examples as doctests."""
    # Quotes or a backslash that would end or break the docstring literal are defused.
    doc = textwrap.dedent(docstring.strip("\n")).strip().replace("\\", "/")
    doc = doc.replace('"""', "'''")
    lines = doc.splitlines() or [problem.description]
    for example in problem.examples:
        call, _, expected = example.removeprefix("assert ").partition(" == ")
        lines += ["", f">>> {call}"] + ([expected] if expected else [])
    body = "\n".join(("    " + x) if x.strip() else "" for x in lines)
    return skeleton_header(problem) + '    """' + body.lstrip() + '\n    """\n'


def parse_docstring(text: str) -> str:
    """The docstring in the model's answer (the first triple-quoted string).

    Raises ParseError when there is none or it does not read like a docstring.
    """
    match = re.search(r'("""|\'\'\')(.*?)(\1|$)', text, re.DOTALL)
    if match is None:
        raise ParseError("no docstring in the answer")
    doc = match.group(2)
    if len(doc.split()) < 3:
        raise ParseError("docstring under 3 words")
    if len(doc) > 1500:
        raise ParseError("docstring over 1500 characters")
    if re.search(r"^\s*(def |return |import |class |>>>)", doc, re.MULTILINE) or "```" in doc:
        raise ParseError("docstring contains code")
    if "Count the vowels" in doc or "the text to scan" in doc:
        raise ParseError("docstring copies the prompt's example")
    return doc


def derived_docstring(problem) -> str:
    """The docstring when the model's does not qualify: the problem's own description."""
    return "\n".join(textwrap.wrap(problem.description, 80))


# -- stage 4: tests ---------------------------------------------------------------------
TEST_PROMPT = ("```python\n{skeleton}```\nWrite {k} different tests for `{entry}`, one per "
               "line, each of the form:\nassert {entry}(<arguments>) == <expected result>")
TEST_STOP = ("```", "\n\n", "\ndef ")


def test_prompt(skeleton: str, entry_point: str, k: int) -> str:
    return TEST_PROMPT.format(skeleton=skeleton.rstrip() + "\n", entry=entry_point, k=k)


TEST_PREFIX = "```python\nassert "


# -- stage 5: solutions -----------------------------------------------------------------
# The same user turn as ucoder.evaluation's HumanEval prompt, so what the model learns
# in SFT is what it sees at test time: a stub in a fenced block, answered by the function.
SOLUTION_INSTRUCTION = "Complete the following Python function:\n```python\n{prompt}```"
SOLUTION_PREFIX = "```python\n"
SOLUTION_STOP = ("```", "\nif __name__", "\nprint(", "\nassert ", "\n# Test", "\n# Example")


def solution_prompt(skeleton: str) -> str:
    """The user prompt of a solution; also the ``prompt`` of the SFT pair."""
    return SOLUTION_INSTRUCTION.format(prompt=skeleton.rstrip() + "\n")

