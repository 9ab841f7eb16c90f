"""Which sample each policy picks on a benchmark problem.

Two kinds of policy: the evaluation-only ones (``greedy``, ``random``, ``max_logprob``,
``oracle``), which need no tests, and every policy of the registry rounds use
(:func:`ucoder.ipc.consensus.list_policies`), run on the model's own tests. Both
:func:`ucoder.evaluation.evaluate` and :func:`ucoder.evaluation.reselect.reselect` build
their per-problem rows here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ucoder.ipc.consensus import (
    Candidate,
    SelectionConfig,
    apply_policy,
    candidate_from_result,
    drop_dead_tests,
    execution_success,
    list_policies,
)

# Policies that need no generated tests. "random": a uniformly random sample;
# "max_logprob": the sample the model is most sure of (mean token log-prob);
# "oracle": solved if any sample passes (the ceiling of any selection, = pass@n).
PLAIN_POLICIES = ("greedy", "random", "max_logprob", "oracle")
# The registry's policies, shared with rounds (ucoder.ipc.consensus).
CONSENSUS_POLICIES = tuple(p.name for p in list_policies())
POLICIES = PLAIN_POLICIES + CONSENSUS_POLICIES
# Policies whose fallback relaxes rho and tau before a model signal decides, and those
# that read a probe's score (``probe_score`` on a candidate row).
LADDER_POLICIES = ("ucoder", "ucoder+probe")
PROBE_POLICIES = ("probe", "ucoder+probe")
RHO_STEP = 0.2


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


def needs_tests(names: Sequence[str]) -> bool:
    """Whether any of ``names`` reads execution results on generated/prompt tests."""
    execution = {p.name for p in list_policies() if p.needs_execution}
    return any(n in execution for n in names)


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


def select_all(problems, names: Sequence[str], runs: list[dict], selection, seed: int
               ) -> list[dict]:
    """The report's per-problem rows: every policy's pick and every candidate."""
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
            row["policies"][name] = pick(name, run, selection, seed, rng)
        if run["greedy"] is not None:
            row["greedy_code"] = run["greedy"]["code"]
        row["candidates"] = [_candidate_row(s) for s in cands]
        out.append(row)
    return out


def _candidate_row(s: dict) -> dict:
    row = {"code": s["code"], "mean_logprob": round(s["mean_logprob"], 4),
           "passed": s["passed"], "finish": s["finish"]}
    # The exact generation context and the raw text, so a probe can read what the model saw.
    for key in ("prompt_text", "raw", "probe_score"):
        if key in s:
            row[key] = s[key]
    return row


def pick(name: str, run: dict, selection, seed: int, rng: random.Random) -> dict:
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
    # A registry policy. When it declines (no usable test, or no candidate meets its
    # thresholds) a benchmark still needs an answer: the fallback ladder picks one and the
    # report counts it, with the step that decided.
    candidates = [_candidate(s) for s in cands]
    if not (needs_tests([name]) and not run["tests"].tests):
        chosen = apply_policy(name, candidates, selection or SelectionConfig(seed=seed))
        if chosen.index is not None:
            return {"index": chosen.index, "passed": cands[chosen.index]["passed"],
                    "fallback": False, "reason": str(chosen.reason)}
        why = str(chosen.reason)
    else:
        why = "no test to run"
    k, step = fallback_pick(name, candidates, selection or SelectionConfig(seed=seed))
    return {"index": k, "passed": cands[k]["passed"], "fallback": True,
            "fallback_step": step, "reason": why}


def _candidate(s: dict) -> Candidate:
    cand = candidate_from_result(s["code"], s["mean_logprob"], s.get("result"))
    cand.extra_score = s.get("probe_score")
    return cand


def fallback_pick(name: str, candidates: Sequence[Candidate], config: SelectionConfig
                  ) -> tuple[int, str]:
    """The pick when policy ``name`` declines, and the step of the ladder that decided.

    The cluster policies (``ucoder``, ``ucoder+probe``) first use the execution evidence:
    rho is relaxed step by step (``RHO_STEP``) with tau kept, then tau drops to 1 (the
    candidates that pass the most tests). Only with no test passed at all does a model
    signal decide: the probe for policies that read it (``ucoder+probe``, ``probe``),
    fluency otherwise and last. Other policies fall back to fluency directly.
    """
    use_probe = name in PROBE_POLICIES and any(c.extra_score is not None for c in candidates)
    pool = list(range(len(candidates)))
    if name in LADDER_POLICIES:
        cands = drop_dead_tests(candidates)[0] if config.ignore_dead_tests else candidates
        rho = config.min_success - RHO_STEP
        while rho > 1e-9:
            chosen = apply_policy(name, cands, dataclasses.replace(config, min_success=rho))
            if chosen.index is not None:
                return chosen.index, f"rho={rho:.1f}"
            rho -= RHO_STEP
        success = [execution_success(c) for c in cands]
        if max(success, default=0.0) > 0:
            top = max(success)
            pool = [i for i, v in enumerate(success) if v >= top - 1e-9]
            return _best(pool, candidates, use_probe), "most_tests"
    return _best(pool, candidates, use_probe), "probe" if use_probe else "fluency"


def _best(pool: list[int], candidates: Sequence[Candidate], use_probe: bool) -> int:
    def key(i: int) -> tuple:
        c = candidates[i]
        probe = c.extra_score if use_probe and c.extra_score is not None else float("-inf")
        return (probe, c.mean_logprob, -i)
    return max(pool, key=key)


def as_plain(obj):
    """A dataclass as a dict (for the report's settings); anything else unchanged."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
