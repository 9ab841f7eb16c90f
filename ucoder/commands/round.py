"""``ucoder round --model M --out DIR``: one self-play round (problems to SFT pairs).

Runs the six IPC stages (:class:`ucoder.ipc.round.RoundRunner`); every stage is a JSONL
file in ``--out``, so a killed round rerun with the same command resumes at the first
missing stage, and a finished one returns at once. Settings come from ``--config`` (a
YAML of :class:`ucoder.ipc.config.RoundConfig` fields); the flags override it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

HELP = "run one IPC round: generate problems, tests and solutions, select by consensus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ucoder.models import EMBEDDED_MODEL

    parser.add_argument("--model", default=EMBEDDED_MODEL,
                        help=f"HF id, local directory or {EMBEDDED_MODEL} (default)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter directory to apply")
    parser.add_argument("--out", required=True, metavar="DIR", help="the round's directory")
    parser.add_argument("--problems", type=int, default=None, help="problems kept (12)")
    parser.add_argument("--tests", type=int, default=None, help="tests per problem (8)")
    parser.add_argument("--samples", type=int, default=None, help="candidates per problem (8)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML of RoundConfig fields (e.g. configs/round.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every sampling stage")
    parser.add_argument("--batch-size", type=int, default=64, help="rows sampled together")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--load-in-4bit", action="store_true", help="4-bit base weights")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 can be faster "
                             "on a busy machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace):
    """The RoundConfig from ``--config`` and the flags (flags win)."""
    from ucoder.ipc.config import load_round_config, round_config_from_dict

    overrides = {"problems": args.problems, "tests": args.tests, "samples": args.samples}
    if args.config:
        return load_round_config(args.config, **overrides)
    return round_config_from_dict({k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)  # cheap checks before the model loads
    except ValueError as err:
        print(f"ucoder round: {err}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ucoder.ipc.round import RoundRunner

    start = time.perf_counter()
    try:  # the sampler loads the model only if a stage still needs it
        stats = RoundRunner(_LazySampler(args), args.out, config, seed=args.seed).run()
    except ValueError as err:
        print(f"ucoder round: {err}", file=sys.stderr)
        return 2
    seconds = stats.get("seconds", {})
    print(f"selected {stats['selected']} pairs from {stats['counts'].get('problems', 0)} "
          f"problems in {time.perf_counter() - start:.1f} s -> {args.out}/selected.jsonl")
    print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    return 0


class _LazySampler:
    """Loads the model on the first ``sample`` call, so a resumed round whose remaining
    stages need no model (executions, selection) does not load one."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._sampler = None

    def sample(self, prompts, n=1, **kwargs):
        if self._sampler is None:
            from ucoder.generation import Sampler
            from ucoder.models import load_model

            a = self.args
            model, tokenizer = load_model(a.model, adapter=a.adapter, device=a.device,
                                          dtype=a.dtype, load_in_4bit=a.load_in_4bit)
            self._sampler = Sampler(model, tokenizer, batch_size=a.batch_size,
                                    show_progress=not a.no_progress)
        return self._sampler.sample(prompts, n, **kwargs)
