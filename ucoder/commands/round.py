"""``ucoder round --model M --out DIR``: one self-play round (problems to SFT pairs).

Runs the six IPC stages (:class:`ucoder.ipc.round.RoundRunner`); every stage is a JSONL
file in ``--out``, so a killed round rerun with the same command resumes at the first
missing stage, and a finished one returns at once. Settings come from ``--config`` (a
YAML of :class:`ucoder.ipc.config.RoundConfig` fields); the flags override it.
"""

from __future__ import annotations

import argparse
import logging
import time

HELP = "run one IPC round: generate problems, tests and solutions, select by consensus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ucoder round``."""
    from ucoder.commands.options import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="the round's directory")
    parser.add_argument("--problems", type=int, default=None, help="problems kept (12)")
    parser.add_argument("--tests", type=int, default=None, help="tests per problem (8)")
    parser.add_argument("--samples", type=int, default=None, help="candidates per problem (8)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML of RoundConfig fields (e.g. configs/round.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every sampling stage")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="most rows sampled together (fewer when the KV cache would not fit)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace):
    """The RoundConfig from ``--config`` and the flags (flags win)."""
    from ucoder.ipc.config import load_round_config, round_config_from_dict

    overrides = {"problems": args.problems, "tests": args.tests, "samples": args.samples}
    if args.config:
        return load_round_config(args.config, **overrides)
    return round_config_from_dict({k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder round``; bad settings raise before a model loads."""
    from ucoder.commands.options import model_options
    from ucoder.ipc.round import RoundRunner

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = model_options(args)
    config = build_config(args)
    start = time.perf_counter()
    # The backend loads only if a stage still needs it.
    sampler = _LazySampler(opts, args.batch_size, not args.no_progress, args.seed)
    stats = RoundRunner(sampler, args.out, config, seed=args.seed).run()
    seconds = stats.get("seconds", {})
    print(f"selected {stats['selected']} pairs from {stats['counts'].get('problems', 0)} "
          f"problems in {time.perf_counter() - start:.1f} s -> {args.out}/selected.jsonl")
    print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    return 0


class _LazySampler:
    """Builds the backend on the first ``sample`` call, so a resumed round whose remaining
    stages need no model (executions, selection) does not load one."""

    def __init__(self, opts, batch_size: int, show_progress: bool, seed: int):
        self.opts, self.batch_size = opts, batch_size
        self.show_progress, self.seed = show_progress, seed
        self._sampler = None

    def _backend(self):
        if self._sampler is None:
            from ucoder.commands.options import build_backend

            self._sampler = build_backend(self.opts, batch_size=self.batch_size,
                                          show_progress=self.show_progress, seed=self.seed)
        return self._sampler

    def sample(self, prompts, n=1, **kwargs):
        return self._backend().sample(prompts, n, **kwargs)

    def score(self, prompts, continuations, **kwargs):
        return self._backend().score(prompts, continuations, **kwargs)
