"""Test-time selection on a benchmark: sample, generate tests, select, score on hidden tests.

For every problem: one greedy completion; ``samples`` sampled completions; tests written
by the model from the prompt alone (:func:`ucoder.ipc.tests.generate_tests` on the
problem's skeleton — never from the hidden tests); every sample run on those tests in the
sandbox; each policy picks one sample; the pick is scored on the hidden tests (every
sample is scored there once, which also gives unbiased pass@k over all samples).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ucoder.evaluation.benchmarks import BenchmarkProblem
from ucoder.evaluation.metrics import mean_pass_at_k, report_ks
from ucoder.evaluation.programs import extract_code, generation_inputs, hidden_job, program
from ucoder.sandbox import Job, sandbox_or_new

# Policies that need no generated tests. "random": a uniformly random sample;
# "max_logprob": the sample the model is most sure of (mean token log-prob);
# "oracle": solved if any sample passes (the ceiling of any selection, = pass@n).
PLAIN_POLICIES = ("greedy", "random", "max_logprob", "oracle")
# Policies of ucoder.ipc.consensus.select, run on the model's own tests.
CONSENSUS_POLICIES = ("ucoder", "random_passing", "low_perplexity", "largest_cluster",
                      "success_rate")
POLICIES = PLAIN_POLICIES + CONSENSUS_POLICIES


@dataclass
class ProblemTests:
    """The tests the consensus policies run for one problem: the examples the prompt
    shows (with ``prompt_tests``) and the model's own tests (``generate_tests``)."""

    prompt: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    dropped: int = 0  # model-written snippets dropped by the test parser

    @property
    def tests(self) -> list[str]:
        return list(dict.fromkeys(self.prompt + self.model))


def check_policies(policies: Sequence[str] | str, samples: int) -> list[str]:
    """Validate policy names (a list or a comma-separated string) against ``samples``."""
    names = [p.strip() for p in policies.split(",")] if isinstance(policies, str) \
        else [str(p).strip() for p in policies]
    names = list(dict.fromkeys(n for n in names if n))
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"policies={','.join(unknown)!r}: unknown; allowed: {', '.join(POLICIES)}")
    if not names:
        raise ValueError(f"policies is empty; allowed: {', '.join(POLICIES)}")
    if not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples={samples!r} is not allowed; use an integer >= 0")
    needs = [n for n in names if n != "greedy"]
    if needs and samples < 1:
        raise ValueError(f"samples=0 allows only the 'greedy' policy; {', '.join(needs)} "
                         "need samples >= 1")
    return names


def evaluate(sampler, problems: Sequence[BenchmarkProblem], *, samples: int = 8,
             policies: Sequence[str] = ("greedy", "random", "ucoder"), num_tests: int = 8,
             selection=None, sandbox=None, seed: int = 0, max_new_tokens: int = 384,
             temperature: float = 0.8, top_p: float = 0.95, timeout: float = 5.0,
             prompt_tests: bool = False, progress: bool = True,
             benchmark: str | None = None) -> dict[str, Any]:
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

    Returns:
        ``{"benchmark", "problems", "samples", "seconds", "policies": {name: {"pass@1",
        "solved", "problems", ...}}, "pass@k": {"1": ..., str(samples): ...},
        "timing", "settings", "per_problem": [...]}``.
    """
    names = check_policies(policies, samples)
    if any(n in CONSENSUS_POLICIES for n in names):
        least = 0 if prompt_tests else 1
        if isinstance(num_tests, bool) or not isinstance(num_tests, int) or num_tests < least:
            raise ValueError(f"num_tests={num_tests!r} is not allowed with consensus policies; "
                             f"use an integer >= {least}"
                             + ("" if prompt_tests else " (0 only with prompt_tests)"))
        # Imported before any sampling: a missing or broken ipc package fails in seconds.
        from ucoder.ipc import consensus, tests  # noqa: F401
    start = time.perf_counter()
    timing: dict[str, float] = {}
    prompts, prefix, stop = generation_inputs(list(problems), getattr(sampler, "chat", True))
    gen = dict(max_new_tokens=max_new_tokens, stop=list(stop), prefix=prefix)

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        timing[key] = round(time.perf_counter() - t0, 2)
        return out

    greedy = timed("greedy_s", lambda: sampler.sample(prompts, 1, temperature=0.0, seed=seed,
                                                      **gen)) if "greedy" in names else None
    sampled = timed("sampling_s", lambda: sampler.sample(
        prompts, samples, temperature=temperature, top_p=top_p, seed=seed, **gen)
    ) if samples else None
    consensus = [n for n in names if n in CONSENSUS_POLICIES]
    testsets = None
    if consensus:
        made = timed("tests_s", lambda: _generate_tests(
            sampler, problems, num_tests, seed, max_new_tokens)) if num_tests else None
        testsets = [ProblemTests(prompt=list(p.examples) if prompt_tests else [],
                                 model=list(made[i].tests) if made else [],
                                 dropped=len(made[i].dropped) if made else 0)
                    for i, p in enumerate(problems)]

    signature = getattr(selection, "signature", "pass")

    with sandbox_or_new(sandbox, timeout) as box:
        runs = timed("sandbox_s", lambda: _execute(box, problems, greedy, sampled, testsets,
                                                   signature, timeout, progress))
    per_problem = _select_all(problems, names, runs, selection, seed)
    return _report(problems, names, per_problem, samples, time.perf_counter() - start, timing,
                   benchmark, dict(num_tests=num_tests, seed=seed, temperature=temperature,
                                   top_p=top_p, max_new_tokens=max_new_tokens,
                                   timeout=timeout, prompt_tests=prompt_tests,
                                   selection=_plain(selection)))


def _generate_tests(sampler, problems, num_tests, seed, max_new_tokens):
    """The model's tests per problem (``TestSet``), written from the skeleton alone."""
    from ucoder.ipc.tests import generate_tests

    return generate_tests(sampler, [p.skeleton or p.prompt for p in problems],
                          [p.entry_point for p in problems], num_tests=num_tests, seed=seed,
                          max_new_tokens=max_new_tokens)


def run_tests(tests: Sequence[str], entry_point: str, signature: str) -> list[str]:
    """The snippets run per candidate for a signature mode.

    ``pass``: the model's asserts (pass/fail vector). ``output``: only their bare calls
    (``assert f(2) == 4`` -> ``f(2)``): execution success is then the share of inputs that
    ran without error (the paper's e(r)) and the hashes carry the outputs, so a wrong
    expected value written by the model cannot exclude a right candidate. ``dual``: both,
    as CodeT scores clusters by the asserts they pass.
    """
    if signature == "pass":
        return list(tests)
    from ucoder.ipc.tests import inputs_only

    calls = inputs_only(tests, entry_point)
    return calls if signature == "output" else list(tests) + calls


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
            code = extract_code(s.text)
            run["samples"].append({"code": code, "mean_logprob": s.mean_logprob,
                                   "finish": s.finish_reason})
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


def _select_all(problems, names, runs, selection, seed) -> list[dict]:
    out = []
    for p, run in zip(problems, runs):
        # Per problem, so a pick does not depend on the other policies or problems.
        rng = random.Random(f"{seed}/{p.task_id}")
        cands = run["samples"]
        row: dict[str, Any] = {"task_id": p.task_id, "samples": len(cands),
                               "correct": sum(s["passed"] for s in cands), "policies": {}}
        if run["tests"] is not None:
            row["tests"] = len(run["tests"].tests)
            row["tests_dropped"] = run["tests"].dropped
            row["generated_tests"] = list(run["tests"].model)
            row["prompt_tests"] = len(run["tests"].prompt)
        for name in names:
            row["policies"][name] = _pick(name, run, selection, seed, rng)
        if run["greedy"] is not None:
            row["greedy_code"] = run["greedy"]["code"]
        row["candidates"] = [{"code": s["code"], "mean_logprob": round(s["mean_logprob"], 4),
                              "passed": s["passed"], "finish": s["finish"]} for s in cands]
        out.append(row)
    return out


def _pick(name: str, run: dict, selection, seed: int, rng: random.Random) -> dict:
    """One policy's choice for one problem: ``{"index", "passed", ...}``."""
    cands = run["samples"]
    if name == "greedy":
        return {"index": None, "passed": bool(run["greedy"]["passed"])}
    if name == "random":
        k = rng.randrange(len(cands))
        return {"index": k, "passed": cands[k]["passed"]}
    best = max(range(len(cands)), key=lambda k: cands[k]["mean_logprob"])
    if name == "max_logprob":
        return {"index": best, "passed": cands[best]["passed"]}
    if name == "oracle":
        hit = next((k for k, s in enumerate(cands) if s["passed"]), None)
        return {"index": hit, "passed": hit is not None}
    # A consensus policy. With no usable test, or when the policy declines (no candidate
    # meets its thresholds), a benchmark still needs an answer: fall back to the sample
    # the model is most sure of, and count the fallback.
    if not run["tests"].tests:
        return {"index": best, "passed": cands[best]["passed"], "fallback": True,
                "reason": "no test to run"}
    from ucoder.ipc.consensus import SelectionConfig, candidate_from_result, select

    config = dataclasses.replace(selection or SelectionConfig(seed=seed), policy=name)
    candidates = [candidate_from_result(s["code"], s["mean_logprob"], s["result"])
                  for s in cands]
    chosen = select(candidates, config)
    if chosen.index is None:
        return {"index": best, "passed": cands[best]["passed"], "fallback": True,
                "reason": str(chosen.reason)}
    return {"index": chosen.index, "passed": cands[chosen.index]["passed"], "fallback": False,
            "reason": str(chosen.reason)}


def _report(problems, names, per_problem, samples, seconds, timing, benchmark, settings):
    n = len(problems)
    policies = {}
    for name in names:
        solved = sum(row["policies"][name]["passed"] for row in per_problem)
        entry: dict[str, Any] = {"pass@1": solved / n if n else 0.0, "solved": solved,
                                 "problems": n}
        if name in CONSENSUS_POLICIES:
            entry["fallbacks"] = sum(bool(row["policies"][name].get("fallback"))
                                     for row in per_problem)
        policies[name] = entry
    counts = [(row["samples"], row["correct"]) for row in per_problem]
    pass_k = {str(k): mean_pass_at_k(counts, k) for k in report_ks(samples)} if samples else {}
    if benchmark is None:
        prefix = problems[0].task_id.split("/")[0].lower() if problems else ""
        benchmark = prefix or "unknown"
    return {"benchmark": benchmark, "problems": n, "samples": samples,
            "seconds": round(seconds, 2), "policies": policies, "pass@k": pass_k,
            "timing": timing, "settings": settings, "per_problem": per_problem}


def _plain(obj):
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
