"""The stages of a round as functions from the previous stages' rows to
``(kept_rows, dropped)``; :class:`ucoder.ipc.round.RoundRunner` stores and resumes them."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ucoder.ipc.agreement import align_pairs
from ucoder.ipc.consensus import Candidate, select
from ucoder.ipc.mutate import mutated_inputs
from ucoder.ipc.problems import generate_problems
from ucoder.ipc.prompts import solution_prompt
from ucoder.ipc.rating import problem_pool, rate_problems
from ucoder.ipc.skeleton import make_skeletons
from ucoder.ipc.solutions import execute_candidates, sample_candidates
from ucoder.ipc.tests import generate_tests, inputs_only
from ucoder.jsonl import write_jsonl
from ucoder.records import Dropped, Problem


def _problems(rows: list[dict]) -> list[Problem]:
    return [Problem.from_row(r) for r in rows]


def problems(sampler, cfg, seed: int, avoid=()):
    """Enough problems for the rating to drop its share and leave ``cfg.problems``;
    repeats of ``avoid`` (earlier rounds' problem texts) drop."""
    pool = problem_pool(cfg.problems, cfg.rating_drop_share)
    attempts = math.ceil(pool * cfg.problem_attempts)
    kept, dropped = generate_problems(sampler, pool, attempts=attempts, seed=seed,
                                      temperature=cfg.problem_temperature, top_p=cfg.top_p,
                                      max_new_tokens=cfg.problem_tokens, avoid=avoid,
                                      per_prompt=cfg.problems_per_prompt,
                                      kinds=cfg.problem_kinds)
    return [p.to_row() for p in kept], dropped


def rated(sampler, cfg, rows, ratings_path: Path):
    """Rate (:mod:`ucoder.ipc.rating`); every problem's rating and would-drop verdict
    go to ``ratings_path``, whatever ``cfg.rating_mode``."""
    kept, dropped, ratings = rate_problems(sampler, _problems(rows), mode=cfg.rating_mode,
                                           drop_share=cfg.rating_drop_share,
                                           min_rating=cfg.min_rating)
    write_jsonl(ratings_path, ratings)
    return [p.to_row() for p in kept], dropped


def skeletons(sampler, cfg, rows, seed: int):
    kept, dropped = make_skeletons(sampler, _problems(rows), use_model=cfg.skeleton_by_model,
                                   seed=seed, max_new_tokens=cfg.skeleton_tokens)
    return [p.to_row() for p in kept], dropped


def tests(sampler, cfg, rows, seed: int):
    """The problem's own examples first, then the model's tests, in ``cfg.test_form``;
    their inputs are extended by up to ``cfg.mutated_inputs`` mutations."""
    probs = _problems(rows)
    sets = generate_tests(sampler, [p.skeleton for p in probs], [p.entry_point for p in probs],
                          num_tests=cfg.tests, seed=seed, temperature=cfg.test_temperature,
                          max_new_tokens=cfg.test_tokens)
    kept, dropped = [], []
    for p, ts in zip(probs, sets):
        dropped += [Dropped("tests", p.id, d["reason"], d["text"]) for d in ts.dropped]
        generated = list(dict.fromkeys(p.examples + ts.tests))
        inputs = inputs_only(generated, p.entry_point)[:cfg.tests]
        if cfg.test_form != "asserts" and cfg.mutated_inputs:
            inputs += mutated_inputs(inputs, p.entry_point, cfg.mutated_inputs)
        run = {"asserts": generated[:cfg.tests], "inputs": inputs,
               "both": list(dict.fromkeys(generated[:cfg.tests] + inputs))}[cfg.test_form]
        if len(run) < max(cfg.min_tests, 1):
            dropped.append(Dropped("tests", p.id, f"only {len(run)} usable tests "
                                   f"(min_tests={cfg.min_tests})", "\n".join(generated)))
            continue
        kept.append({"problem_id": p.id, "generated": generated, "tests": run})
    return kept, dropped


def candidates(sampler, cfg, skeleton_rows, test_rows, seed: int):
    with_tests = {r["problem_id"] for r in test_rows}
    probs = [p for p in _problems(skeleton_rows) if p.id in with_tests]
    return sample_candidates(sampler, probs, cfg.samples, seed=seed,
                             temperature=cfg.solution_temperature, top_p=cfg.top_p,
                             max_new_tokens=cfg.solution_tokens)


def executions(sandbox, cfg, skeleton_rows, candidate_rows, test_rows):
    tests_of = {r["problem_id"]: r["tests"] for r in test_rows}
    rows = execute_candidates(sandbox, _problems(skeleton_rows), candidate_rows, tests_of,
                              timeout=cfg.timeout)
    return rows, []


def selected(cfg, skeleton_rows, candidate_rows, execution_rows, consensus_path: Path,
             extra_score: Callable[[list[str], list[str]], list[float]] | None, *,
             test_rows: list[dict] | None = None, sandbox=None):
    """Select per problem; write ``consensus_path``; make each pair's docstring examples
    agree with its code (:func:`ucoder.ipc.agreement.align_pairs`, run in ``sandbox`` or
    a new one; the changed prompts go to ``rewrites.jsonl`` beside ``consensus_path``);
    return the SFT pairs and the problems dropped (no selection, or a docstring that
    cannot be made whole), with reasons."""
    probs = {p.id: p for p in _problems(skeleton_rows)}
    code = {(c["problem_id"], c["index"]): c for c in candidate_rows}
    groups: dict[str, list[dict]] = {}
    for e in execution_rows:
        groups.setdefault(e["problem_id"], []).append(e)
    prompts = {pid: solution_prompt(probs[pid].skeleton) for pid in groups}
    extras = _extra_scores(extra_score, execution_rows, code, prompts)
    consensus, chosen, dropped = [], [], []
    for pid, rows in groups.items():
        cands = [Candidate(completion=code[(pid, e["index"])]["completion"],
                           mean_logprob=code[(pid, e["index"])]["mean_logprob"],
                           passed=e["passed"], hashes=e["hashes"],
                           extra_score=extras.get((pid, e["index"]))) for e in rows]
        sel = select(cands, cfg.selection)
        size = {i: len(g) for g in sel.clusters for i in g}
        for k, c in enumerate(cands):
            row = code[(pid, rows[k]["index"])]
            consensus.append({"problem_id": pid, "prompt": prompts[pid],
                              "prompt_text": row.get("prompt_text"), "raw": row.get("raw"),
                              "completion": c.completion, "mean_logprob": c.mean_logprob,
                              "execution_success": round(sel.success[k], 4),
                              "cluster_size": size.get(k, 0),
                              "in_consensus": sel.in_consensus[k], "selected": k == sel.index,
                              "extra_score": c.extra_score, "index": rows[k]["index"]})
        if sel.index is None:
            dropped.append(Dropped("selected", pid, sel.reason))
            continue
        c = cands[sel.index]
        chosen.append({"prompt": prompts[pid], "completion": c.completion, "problem_id": pid,
                       "scores": {"execution_success": round(sel.success[sel.index], 4),
                                  "cluster_size": size.get(sel.index, 0),
                                  "candidates": len(cands), "clusters": len(sel.clusters),
                                  "mean_logprob": c.mean_logprob,
                                  "perplexity": round(math.exp(-c.mean_logprob), 4),
                                  "extra_score": c.extra_score, "rating": probs[pid].rating,
                                  "reason": sel.reason}})
    write_jsonl(consensus_path, consensus)
    chosen, more, rewrites = _aligned(cfg, probs, chosen, test_rows, sandbox)
    write_jsonl(consensus_path.parent / "rewrites.jsonl", rewrites)
    return chosen, dropped + more


def _aligned(cfg, probs, chosen, test_rows, sandbox):
    if not chosen:
        return [], [], []
    from ucoder.sandbox import sandbox_or_new

    tests_of = {r["problem_id"]: r["tests"] for r in test_rows or []}
    with sandbox_or_new(sandbox, cfg.timeout) as box:
        return align_pairs(box, probs, chosen, tests_of, cfg.timeout)


def _extra_scores(extra_score, execution_rows, code, prompts) -> dict:
    if extra_score is None or not execution_rows:
        return {}
    keys = [(e["problem_id"], e["index"]) for e in execution_rows]
    # What the model read and wrote (C3); rows from before those fields existed fall back
    # to the instruction and the extracted code.
    scores = extra_score([code[k].get("prompt_text") or prompts[k[0]] for k in keys],
                         [code[k].get("raw") or code[k]["completion"] for k in keys])
    if len(scores) != len(keys):
        raise ValueError(f"extra_score returned {len(scores)} scores for {len(keys)} "
                         "candidates; it must return one per candidate")
    return {k: float(s) for k, s in zip(keys, scores)}
