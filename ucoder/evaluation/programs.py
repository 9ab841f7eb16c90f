"""From a benchmark problem to a model prompt, and from a completion to a scored program.

Prompt style (measured on the embedded model, see benchmarks/eval_results.md): the user
turn asks for the function and shows the problem's code in a fenced block; the assistant
turn starts with a ```python fence (``PREFIX``) and the model writes the whole function.
The program is ``context + "\\n" + code``: HumanEval's prompt (imports, helpers, stub)
comes first and the completion's ``def`` replaces the docstring-only stub (a completion
that only writes the indented body continues the stub instead, which is also right).
"""

from __future__ import annotations

import ast

from ucoder.evaluation.benchmarks import BenchmarkProblem
from ucoder.ipc.code import parses
from ucoder.ipc.prompts import SOLUTION_INSTRUCTION, SOLUTION_PREFIX, SOLUTION_STOP
from ucoder.sandbox import Job

# The same texts as the IPC solution stage, so SFT prompts match test-time prompts. The
# stops end the code before the model writes top-level test code (a wrong assert of its
# own would fail a right function) and save tokens.
INSTRUCTION = SOLUTION_INSTRUCTION
PREFIX = SOLUTION_PREFIX
STOP = SOLUTION_STOP
# Plain completion (a base model, ``chat=False``) continues the stub's body; the Codex
# paper's stops end it at the next top-level statement.
PLAIN_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#")


def model_prompt(problem: BenchmarkProblem) -> str:
    """The user turn for ``problem`` (HumanEval: the stub in a code block; MBPP: the text)."""
    if problem.context:
        return INSTRUCTION.format(prompt=problem.prompt)
    return problem.prompt


def generation_inputs(problems: list[BenchmarkProblem], chat: bool
                      ) -> tuple[list[str], str, tuple[str, ...]]:
    """Prompts, prefix and stop strings for one ``Sampler.sample`` call over ``problems``.

    A chat model gets :func:`model_prompt` and answers after the ``PREFIX`` fence. A plain
    (base) model continues HumanEval-style stubs directly; MBPP-style text gets the
    fence appended to the prompt itself.
    """
    if chat:
        return [model_prompt(p) for p in problems], PREFIX, STOP
    if problems and all(p.context for p in problems):
        return [p.prompt for p in problems], "", PLAIN_STOP
    return [model_prompt(p) + "\n" + PREFIX for p in problems], "", STOP


def extract_code(completion: str) -> str:
    """The code of a completion that started inside a fence (``PREFIX``).

    The text up to the first fence is the code, unless it is empty or prose (does not
    parse) and a fenced block follows: then that block is taken. Without any fence the
    text is taken as it is; code that does not parse is left to fail in the sandbox.
    """
    head, sep, rest = completion.partition("```")
    text = head
    if sep and (not head.strip() or not parses(head)):
        block = rest.split("\n", 1)[1] if "\n" in rest else ""  # drop the ```python line
        block = block.partition("```")[0]
        if block.strip():
            text = block
    return sanitize(text.rstrip() + "\n")


def sanitize(code: str) -> str:
    """Drop top-level statements that only run or check things (calls, asserts, the
    ``__main__`` block): they belong to no solution and can only make it fail.

    Code that does not parse is returned unchanged (the sandbox reports its error).
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return code
    drop: list[tuple[int, int]] = []
    for node in tree.body:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        main = (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")
        if (isinstance(node, ast.Expr) and not docstring) or isinstance(node, ast.Assert) or main:
            drop.append((node.lineno, node.end_lineno or node.lineno))
    if not drop:
        return code
    lines = code.splitlines(keepends=True)
    keep = [line for i, line in enumerate(lines, start=1)
            if not any(a <= i <= b for a, b in drop)]
    return "".join(keep)


def program(problem: BenchmarkProblem, code: str) -> str:
    """The program that is run: the problem's context, then the candidate's code."""
    return f"{problem.context}\n{code}" if problem.context else code


def hidden_job(problem: BenchmarkProblem, code: str, job_id: str, timeout: float) -> Job:
    """A sandbox job scoring ``code`` on the problem's hidden tests."""
    return Job(id=job_id, code=program(problem, code), tests=list(problem.tests),
               timeout=timeout)
