"""Greedy pass@1 of a base model (+ adapter) on a whole benchmark, kept per problem."""

from __future__ import annotations

import ast
import time
from pathlib import Path

from ucoder.jsonl import read_json, write_json


def model_options(fit: dict) -> dict:
    """The ``load_model`` options of the fits' base (same weights and quantization)."""
    from ucoder.models import EMBEDDED_MODEL, FourBitOptions

    model = fit.get("model") or {}
    quant = model.get("quant") or {}
    return {"name": model.get("model", EMBEDDED_MODEL),
            "load_in_4bit": bool(model.get("load_in_4bit", True)),
            "quant": FourBitOptions(**quant) if isinstance(quant, dict) else quant,
            "dtype": model.get("dtype", "auto")}


def failure_kind(code: str, entry_point: str) -> str:
    """``format`` when the completion cannot run as the function asked for, else ``logic``."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "format"
    defined = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.name == entry_point for n in tree.body)
    return "logic" if defined else "format"


def evaluate_greedy(path: Path, options: dict, problems, *, adapter: str | None,
                    study) -> dict:
    """Evaluate once and write ``path``; a finished file is read back instead."""
    record = read_json(path)
    if record is not None:
        return record
    from ucoder.evaluation import evaluate
    from ucoder.generation import Sampler
    from ucoder.models import load_model

    start = time.perf_counter()
    model, tokenizer = load_model(options["name"], load_in_4bit=options["load_in_4bit"],
                                  quant=options["quant"], dtype=options["dtype"],
                                  adapter=adapter)
    if study.generation == "merged_copy":
        from ucoder.models import merged_generation_copy

        model = merged_generation_copy(model)
    model.eval()
    sampler = Sampler(model, tokenizer, batch_size=study.eval_batch_size)
    report = evaluate(sampler, problems, samples=0, policies=("greedy",),
                      max_new_tokens=study.max_new_tokens, timeout=study.timeout,
                      seed=study.seed, progress=False, benchmark=study.benchmark)
    record = summarize(report, problems, adapter, time.perf_counter() - start)
    record["generation"] = study.generation
    write_json(path, record)
    return record


def summarize(report: dict, problems, adapter: str | None, seconds: float) -> dict:
    """Per-problem outcomes (0/1 in benchmark order), failure kinds and the codes."""
    rows = []
    for problem, row in zip(problems, report["per_problem"]):
        passed = bool(row["policies"]["greedy"]["passed"])
        code = row.get("greedy_code", "")
        rows.append({"task_id": problem.task_id, "passed": passed, "code": code,
                     "failure": None if passed else failure_kind(code, problem.entry_point)})
    failures = {kind: sum(r["failure"] == kind for r in rows) for kind in ("format", "logic")}
    return {"adapter": adapter, "problems": len(rows),
            "solved": sum(r["passed"] for r in rows),
            "pass@1": sum(r["passed"] for r in rows) / max(len(rows), 1),
            "outcomes": [int(r["passed"]) for r in rows],
            "solved_ids": [r["task_id"] for r in rows if r["passed"]],
            "failures": failures, "seconds": round(seconds, 1), "per_problem": rows}
