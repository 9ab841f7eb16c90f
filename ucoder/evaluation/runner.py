"""Test-time selection on a benchmark: sample, generate tests, select, score on hidden tests.

For every problem: one greedy completion; ``samples`` sampled completions; tests written
by the model from the prompt alone (:func:`ucoder.ipc.tests.generate_tests` on the
problem's skeleton — never from the hidden tests); every sample run on those tests in the
sandbox; each policy picks one sample (:mod:`ucoder.evaluation.selection`); the pick is
scored on the hidden tests (every sample is scored there once, which also gives unbiased
pass@k over all samples).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ucoder.evaluation.benchmarks import BenchmarkProblem
from ucoder.evaluation.metrics import mean_pass_at_k, report_ks
from ucoder.evaluation.programs import extract_code, generation_inputs, hidden_job, program
from ucoder.evaluation.selection import (
    CONSENSUS_POLICIES,
    ProblemTests,
    as_plain,
    check_policies,
    needs_tests,
    run_tests,
    select_all,
)
from ucoder.sandbox import Job, sandbox_or_new


def evaluate(sampler, problems: Sequence[BenchmarkProblem], *, samples: int = 8,
             policies: Sequence[str] = ("greedy", "random", "ucoder"), num_tests: int = 8,
             selection=None, sandbox=None, seed: int = 0, max_new_tokens: int = 384,
             temperature: float = 0.8, top_p: float = 0.95, timeout: float = 5.0,
             prompt_tests: bool = False, progress: bool = True,
             benchmark: str | None = None, candidate_scorer=None) -> dict[str, Any]:
    """Evaluate selection policies on ``problems``; return the report (a JSON-able dict).

    Args:
        sampler: a :class:`ucoder.generation.Sampler` (or anything with its ``sample``).
        problems: from :func:`ucoder.evaluation.load_benchmark`.
        samples: sampled completions per problem (0: greedy only, no tests generated).
        policies: names from ``POLICIES``.
        num_tests: tests the model writes per problem for the consensus policies (0 with
            ``prompt_tests``: the prompt's examples only, no test generation).
        selection: a ``SelectionConfig`` (signature, thresholds); its policy is replaced by
            each consensus policy in turn.
        sandbox: a running :class:`ucoder.sandbox.Sandbox`; ``None`` starts one for the call.
        seed: seeds sampling, test generation and the random policy.
        max_new_tokens, temperature, top_p: sampling settings (greedy uses temperature 0).
        timeout: wall-clock seconds per sandbox job.
        prompt_tests: the consensus policies also run the examples the prompt shows
            (``BenchmarkProblem.examples``; part of the prompt, never the hidden tests).
        progress: show the sandbox's progress bars.
        benchmark: the name stored in the report (default: from the task ids).
        candidate_scorer: ``(prompt_texts, raw_texts) -> scores`` for every sample (e.g.
            :func:`ucoder.evaluation.probe_scores.probe_scorer`); stored as each
            candidate's ``probe_score``, which the probe policies read.

    Returns:
        ``{"benchmark", "problems", "samples", "seconds", "policies": {name: {"pass@1",
        "solved", "problems", ...}}, "pass@k": {"1": ..., str(samples): ...},
        "timing", "settings", "per_problem": [...]}``; every candidate row carries its
        ``prompt_text`` (the exact generation context) and ``raw`` text.
    """
    names = check_policies(policies, samples)
    testing = needs_tests(names)
    if testing:
        _check_num_tests(num_tests, prompt_tests)
    start, timing = time.perf_counter(), {}
    timed = _timer(timing)
    greedy, sampled = _sample(sampler, problems, names, samples, timed, seed=seed,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p)
    testsets = _testsets(sampler, problems, num_tests, seed, max_new_tokens, prompt_tests,
                         timed) if testing else None
    signature = getattr(selection, "signature", "pass")
    with sandbox_or_new(sandbox, timeout) as box:
        runs = timed("sandbox_s", lambda: _execute(box, problems, greedy, sampled, testsets,
                                                   signature, timeout, progress))
    if candidate_scorer is not None:
        timed("probe_s", lambda: _score_samples(runs, candidate_scorer))
    per_problem = select_all(problems, names, runs, selection, seed)
    settings = dict(num_tests=num_tests, seed=seed, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, timeout=timeout,
                    prompt_tests=prompt_tests, selection=as_plain(selection))
    return build_report(problems, names, per_problem, samples, time.perf_counter() - start,
                        timing, benchmark, settings)


def _score_samples(runs: list[dict], scorer) -> None:
    """Every sample's ``probe_score`` from ``scorer(prompt_texts, raw_texts)``."""
    flat = [s for run in runs for s in run["samples"]]
    scores = scorer([s["prompt_text"] for s in flat], [s["raw"] for s in flat])
    for s, score in zip(flat, scores, strict=True):
        s["probe_score"] = round(float(score), 6)


def _check_num_tests(num_tests, prompt_tests: bool) -> None:
    least = 0 if prompt_tests else 1
    if isinstance(num_tests, bool) or not isinstance(num_tests, int) or num_tests < least:
        raise ValueError(f"num_tests={num_tests!r} is not allowed with consensus policies; "
                         f"use an integer >= {least}"
                         + ("" if prompt_tests else " (0 only with prompt_tests)"))
    # Imported before any sampling: a missing or broken ipc package fails in seconds.
    from ucoder.ipc import tests  # noqa: F401


def _timer(timing: dict[str, float]):
    """``timed(key, fn)``: run ``fn`` and store its wall time under ``timing[key]``."""
    def timed(key: str, fn):
        t0 = time.perf_counter()
        out = fn()
        timing[key] = round(time.perf_counter() - t0, 2)
        return out
    return timed


def _sample(sampler, problems, names, samples, timed, *, seed, max_new_tokens, temperature,
            top_p):
    """The greedy completions (if a policy needs them) and the sampled ones."""
    prompts, prefix, stop = generation_inputs(list(problems), getattr(sampler, "chat", True))
    gen = dict(max_new_tokens=max_new_tokens, stop=list(stop), prefix=prefix, seed=seed)
    greedy = timed("greedy_s", lambda: sampler.sample(prompts, 1, temperature=0.0, **gen)
                   ) if "greedy" in names else None
    sampled = timed("sampling_s", lambda: sampler.sample(
        prompts, samples, temperature=temperature, top_p=top_p, **gen)) if samples else None
    return greedy, sampled


def _testsets(sampler, problems, num_tests, seed, max_new_tokens, prompt_tests, timed
              ) -> list[ProblemTests]:
    """Per problem: the prompt's examples (``prompt_tests``) and the model's own tests."""
    made = timed("tests_s", lambda: _generate_tests(
        sampler, problems, num_tests, seed, max_new_tokens)) if num_tests else None
    return [ProblemTests(prompt=list(p.examples) if prompt_tests else [],
                         model=list(made[i].tests) if made else [],
                         dropped=len(made[i].dropped) if made else 0)
            for i, p in enumerate(problems)]


def _generate_tests(sampler, problems, num_tests, seed, max_new_tokens):
    """The model's tests per problem (``TestSet``), written from the skeleton alone."""
    from ucoder.ipc.tests import generate_tests

    return generate_tests(sampler, [p.skeleton or p.prompt for p in problems],
                          [p.entry_point for p in problems], num_tests=num_tests, seed=seed,
                          max_new_tokens=max_new_tokens)


def _sample_row(s) -> dict:
    """A sampled completion as the runner keeps it (``s`` is a ``Sample``)."""
    return {"code": extract_code(s.text), "mean_logprob": s.mean_logprob,
            "finish": s.finish_reason, "prompt_text": getattr(s, "prompt_text", ""),
            "raw": s.text}


def _execute(box, problems, greedy, sampled, testsets, signature, timeout, progress
             ) -> list[dict]:
    """One sandbox batch: greedy + samples on hidden tests, samples on generated tests."""
    runs: list[dict] = []
    jobs: list = []
    for i, p in enumerate(problems):
        run: dict[str, Any] = {"greedy": None, "samples": [], "tests": None}
        if greedy is not None:
            code = extract_code(greedy[i][0].text)
            run["greedy"] = {"code": code, "finish": greedy[i][0].finish_reason}
            jobs.append(hidden_job(p, code, f"g{i}", timeout))
        snippets = (run_tests(testsets[i].tests, p.entry_point, signature)
                    if testsets is not None and testsets[i].tests else None)
        for j, s in enumerate(sampled[i] if sampled is not None else []):
            run["samples"].append(_sample_row(s))
            code = run["samples"][-1]["code"]
            jobs.append(hidden_job(p, code, f"h{i}.{j}", timeout))
            if snippets:
                jobs.append(Job(id=f"t{i}.{j}", code=program(p, code), timeout=timeout,
                                tests=snippets))
        if testsets is not None:
            run["tests"] = testsets[i]
        runs.append(run)
    results = {r.id: r for r in box.run(jobs, progress=progress)} if jobs else {}
    for i, run in enumerate(runs):
        if run["greedy"] is not None:
            run["greedy"]["passed"] = results[f"g{i}"].passed
        for j, s in enumerate(run["samples"]):
            s["passed"] = results[f"h{i}.{j}"].passed
            s["result"] = results.get(f"t{i}.{j}")
    return runs


def build_report(problems, names, per_problem, samples, seconds, timing, benchmark,
                 settings) -> dict[str, Any]:
    """The report dict from the per-problem rows of :func:`select_all`."""
    n = len(problems)
    policies = {}
    for name in names:
        solved = sum(row["policies"][name]["passed"] for row in per_problem)
        entry: dict[str, Any] = {"pass@1": solved / n if n else 0.0, "solved": solved,
                                 "problems": n}
        if name in CONSENSUS_POLICIES:
            picks = [row["policies"][name] for row in per_problem]
            entry["fallbacks"] = sum(bool(pk.get("fallback")) for pk in picks)
            steps = Counter(pk["fallback_step"] for pk in picks if pk.get("fallback_step"))
            entry["fallback_steps"] = dict(sorted(steps.items()))
        policies[name] = entry
    counts = [(row["samples"], row["correct"]) for row in per_problem]
    pass_k = {str(k): mean_pass_at_k(counts, k) for k in report_ks(samples)} if samples else {}
    if benchmark is None:
        prefix = problems[0].task_id.split("/")[0].lower() if problems else ""
        benchmark = prefix or "unknown"
    return {"benchmark": benchmark, "problems": n, "samples": samples,
            "seconds": round(seconds, 2), "policies": policies, "pass@k": pass_k,
            "timing": timing, "settings": settings, "per_problem": per_problem}

