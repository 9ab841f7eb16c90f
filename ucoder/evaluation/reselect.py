"""Selection again on a saved report: other policies, signatures or thresholds, no model.

A report from :func:`ucoder.evaluation.evaluate` keeps every candidate's code, mean
log-prob and hidden-test verdict, and each problem's generated tests. Re-running only the
generated tests in the sandbox (seconds) and the selection gives the ablation the paper
reports (signature x policy x thresholds) on exactly the same samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ucoder.evaluation.benchmarks import BenchmarkProblem
from ucoder.evaluation.programs import program
from ucoder.evaluation.runner import build_report
from ucoder.evaluation.selection import (
    ProblemTests,
    as_plain,
    check_policies,
    needs_tests,
    run_tests,
    select_all,
)
from ucoder.sandbox import Job, sandbox_or_new


def reselect(report: dict, problems: Sequence[BenchmarkProblem], *,
             policies: Sequence[str] | None = None, selection=None, sandbox=None,
             seed: int = 0, timeout: float = 5.0, prompt_tests: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """A new report for ``policies`` on the candidates and generated tests of ``report``.

    Args:
        report: a report written by :func:`ucoder.evaluation.evaluate` (with samples and,
            for consensus policies, generated tests).
        problems: the benchmark problems; every task id of the report must be among them.
        policies: default: the report's policies.
        selection: a ``SelectionConfig`` (signature, thresholds).
        sandbox, seed, timeout, prompt_tests, progress: as in
            :func:`~ucoder.evaluation.evaluate`.

    Raises:
        ValueError: a task id or field the new selection needs is missing from the report.
    """
    start = time.perf_counter()
    rows = report.get("per_problem") or []
    names = check_policies(policies or list(report.get("policies", {})), report.get("samples", 0))
    probs = _problems_of(rows, problems)
    testing = needs_tests(names)
    _check_fields(rows, names, testing, prompt_tests)
    runs, jobs = _runs(rows, probs, testing, prompt_tests, timeout,
                       getattr(selection, "signature", "pass"))
    if jobs:
        results = _run(jobs, sandbox, timeout, progress)
        for i, run in enumerate(runs):
            for j, cand in enumerate(run["samples"]):
                cand["result"] = results.get(f"t{i}.{j}")
    per_problem = select_all(probs, names, runs, selection, seed)
    settings = dict(report.get("settings", {}), seed=seed, selection=as_plain(selection),
                    prompt_tests=prompt_tests, reselected=True)
    out = build_report(probs, names, per_problem, report.get("samples", 0),
                       time.perf_counter() - start, {"sandbox_s": 0.0},
                       report.get("benchmark"), settings)
    out["timing"] = {"reselect_s": round(time.perf_counter() - start, 2),
                     "original": report.get("timing", {})}
    return out


def _problems_of(rows: list[dict], problems: Sequence[BenchmarkProblem]
                 ) -> list[BenchmarkProblem]:
    by_id = {p.task_id: p for p in problems}
    missing = [r["task_id"] for r in rows if r["task_id"] not in by_id]
    if missing:
        raise ValueError(f"report task ids not in the benchmark: {', '.join(missing[:5])}")
    return [by_id[r["task_id"]] for r in rows]


def _check_fields(rows: list[dict], names: list[str], testing: bool, prompt_tests: bool
                  ) -> None:
    if "greedy" in names and any("greedy" not in r["policies"] for r in rows):
        raise ValueError("policy 'greedy' needs a report that has it")
    if testing and not prompt_tests and any("generated_tests" not in r for r in rows):
        raise ValueError("consensus policies need a report with generated tests (written "
                         "by evaluate() with a consensus policy) or prompt_tests")


def _runs(rows, probs, testing, prompt_tests, timeout, signature) -> tuple[list, list]:
    """The runner's per-problem runs rebuilt from the report, and the test jobs to rerun."""
    runs, jobs = [], []
    for i, (p, row) in enumerate(zip(probs, rows)):
        greedy = row["policies"].get("greedy")
        run: dict[str, Any] = {
            "greedy": {"passed": greedy["passed"], "code": row.get("greedy_code", "")}
            if greedy else None,
            "samples": [dict(c, result=None) for c in row["candidates"]],
            "tests": ProblemTests(prompt=list(p.examples) if prompt_tests else [],
                                  model=list(row.get("generated_tests", [])),
                                  dropped=row.get("tests_dropped", 0)) if testing else None}
        snippets = (run_tests(run["tests"].tests, p.entry_point, signature)
                    if testing and run["tests"].tests else None)
        for j, cand in enumerate(run["samples"] if snippets else []):
            jobs.append(Job(id=f"t{i}.{j}", code=program(p, cand["code"]), timeout=timeout,
                            tests=snippets))
        runs.append(run)
    return runs, jobs


def _run(jobs, sandbox, timeout, progress) -> dict:
    with sandbox_or_new(sandbox, timeout) as box:
        return {r.id: r for r in box.run(jobs, progress=progress)}
