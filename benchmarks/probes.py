"""Benchmark: do hidden-state probes predict HumanEval correctness better than log-prob?

Stages (each cached under ``benchmarks/out/`` so reruns skip it): generate candidates
with the embedded model, label them with HumanEval's real tests, label them again by
execution consensus on the docstring example inputs (no ground truth), extract hidden
states of every layer, then problem-grouped 5-fold cross-validation.

    .venv/bin/python benchmarks/probes.py --problems 40 --samples 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.probe_candidates import generate_candidates  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=40, help="first N HumanEval problems")
    ap.add_argument("--samples", type=int, default=8, help="candidates per problem")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-after", choices=["generate", "label", "features", "cv"], default="cv")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = generate_candidates(args, args.out / "humaneval_candidates.jsonl")
    print(f"{len(rows)} candidates for {len({r['task_id'] for r in rows})} problems")
    if args.stop_after == "generate":
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
