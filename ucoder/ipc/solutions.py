"""Stage 5 (solution space probing): dense sampling and execution in the sandbox.

Each problem's prompt is its skeleton in the HumanEval-style instruction
(:func:`ucoder.ipc.prompts.solution_prompt`); the answer starts inside a ```python fence
and is cut at the closing fence. A candidate is kept in its clean form — the last
definition of the entry point and the imports, helpers and constants it uses, nothing
else (:func:`ucoder.ipc.code.extract_solution`); one that cannot be normalised (does not
parse, lacks the entry point, is only a stub) is dropped with the reason, never executed.
Kept candidates run in the sandbox after the skeleton's imports, against all tests of
their problem.
"""

from __future__ import annotations

from collections.abc import Sequence

from ucoder.ipc.code import ParseError, extract_solution, typing_imports
from ucoder.ipc.prompts import SOLUTION_PREFIX, SOLUTION_STOP, solution_prompt
from ucoder.records import Dropped, Problem


def sample_candidates(sampler, problems: Sequence[Problem], n: int, *, seed: int = 0,
                      temperature: float = 0.8, top_p: float = 0.95,
                      max_new_tokens: int = 192) -> tuple[list[dict], list[Dropped]]:
    """``n`` candidates per problem; rows ``{"problem_id", "index", "completion",
    "mean_logprob", "num_tokens", "finish_reason", "prompt_text", "raw"}`` for those that
    parse (``prompt_text``: the exact text the model was conditioned on, template and
    answer prefix included; ``raw``: the sampled text the completion was extracted from)."""
    if not problems:
        return [], []
    groups = sampler.sample([solution_prompt(p.skeleton) for p in problems], n,
                            temperature=temperature, top_p=top_p, seed=seed,
                            max_new_tokens=max_new_tokens, stop=list(SOLUTION_STOP),
                            prefix=SOLUTION_PREFIX)
    rows, dropped = [], []
    for p, group in zip(problems, groups):
        for k, s in enumerate(group):
            try:
                code = extract_solution(s.text, p.entry_point)
            except ParseError as err:
                reason = str(err) + (" (cut at max_new_tokens)" if s.finish_reason == "length"
                                     else "")
                dropped.append(Dropped("candidates", f"{p.id}/{k}", reason, s.text))
                continue
            rows.append({"problem_id": p.id, "index": k, "completion": code,
                         "mean_logprob": round(float(s.mean_logprob), 6),
                         "num_tokens": s.num_tokens, "finish_reason": s.finish_reason,
                         "prompt_text": s.prompt_text, "raw": s.text})
    return rows, dropped


def program_of(problem: Problem, completion: str) -> str:
    """What runs: the skeleton's typing imports, then the candidate's code."""
    imports = typing_imports(problem.signature)
    return f"{imports}\n\n{completion}" if imports else completion


def execute_candidates(sandbox, problems: Sequence[Problem], candidates: Sequence[dict],
                       tests: dict[str, list[str]], *, timeout: float | None = None,
                       progress: bool = False) -> list[dict]:
    """Run every candidate against its problem's tests; one row per candidate.

    Rows: ``{"problem_id", "index", "status", "passed": [bool], "hashes": [str|None],
    "outputs": [str|None], "error"}``; a test never reached (timeout) counts as not
    passed; a candidate whose code did not run has empty vectors.
    """
    from ucoder.sandbox import Job

    by_id = {p.id: p for p in problems}
    jobs = [Job(id=f"{c['problem_id']}/{c['index']}",
                code=program_of(by_id[c["problem_id"]], c["completion"]),
                tests=list(tests[c["problem_id"]]), timeout=timeout) for c in candidates]
    results = sandbox.run(jobs, progress=progress) if jobs else []
    rows = []
    for c, job, r in zip(candidates, jobs, results):
        got = list(r.tests)[:len(job.tests)]
        # No test result at all: the code itself did not run; leave the vectors empty so
        # selection treats it as "did not run" rather than as a behaviour.
        count = len(job.tests) if got else 0
        passed = [bool(t.passed) for t in got] + [False] * (count - len(got))
        hashes = [t.hash for t in got] + [None] * (count - len(got))
        rows.append({"problem_id": c["problem_id"], "index": c["index"], "status": r.status,
                     "passed": passed, "hashes": hashes,
                     "outputs": [t.output for t in got] + [None] * (count - len(got)),
                     "error": (r.error or "")[:300] or None})
    return rows
