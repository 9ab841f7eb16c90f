"""From a benchmark problem to a model prompt, and from a completion to a scored program.

Prompt style (measured on the embedded model, see benchmarks/eval_results.md): the user
turn asks for the function and shows the problem's code in a fenced block; the assistant
turn starts with a ```python fence (``PREFIX``) and the model writes the whole function.
The program is ``context + "\\n" + code``: HumanEval's prompt (imports, helpers, stub)
comes first and the completion's ``def`` replaces the docstring-only stub (a completion
that only writes the indented body continues the stub instead, which is also right).
"""

from __future__ import annotations

from ucoder.evaluation.benchmarks import BenchmarkProblem
from ucoder.ipc.code import ParseError, parses
from ucoder.ipc.normalize import normalize_solution, strip_top_level
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


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The code of a completion that started inside a fence (``PREFIX``).

    The text up to the first fence is the code, unless it is empty or prose (does not
    parse) and a fenced block follows: then that block is taken. Without any fence the
    text is taken as it is. With ``entry_point`` the code is normalised as in a round
    (:func:`ucoder.ipc.normalize.normalize_solution`); otherwise, or when that fails,
    only top-level calls, asserts and the ``__main__`` block are dropped
    (:func:`ucoder.ipc.normalize.strip_top_level`). Code that does not parse is left to
    fail in the sandbox.
    """
    head, sep, rest = completion.partition("```")
    text = head
    if sep and (not head.strip() or not parses(head)):
        block = rest.split("\n", 1)[1] if "\n" in rest else ""  # drop the ```python line
        block = block.partition("```")[0]
        if block.strip():
            text = block
    return sanitize(text.rstrip() + "\n", entry_point)


def sanitize(code: str, entry_point: str | None = None) -> str:
    """Code cleaned the way a round cleans candidates, as far as it can be (see
    :func:`extract_code`); unparsable code is returned unchanged."""
    if entry_point is not None:
        try:
            return normalize_solution(code, entry_point)
        except ParseError:
            pass  # e.g. a completion that continues the stub's body
    return strip_top_level(code)


def program(problem: BenchmarkProblem, code: str) -> str:
    """The program that is run: the problem's context, then the candidate's code."""
    return f"{problem.context}\n{code}" if problem.context else code


def hidden_job(problem: BenchmarkProblem, code: str, job_id: str, timeout: float) -> Job:
    """A sandbox job scoring ``code`` on the problem's hidden tests."""
    return Job(id=job_id, code=program(problem, code), tests=list(problem.tests),
               timeout=timeout)
