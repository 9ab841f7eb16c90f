"""RoundStep: one IPC round with given weights, and the training file made from its picks.

Usable alone: ``generate`` runs (or resumes) a round into a directory, ``merge`` joins the
DDP shards of one, ``training_set`` turns its ``selected.jsonl`` into the next training
pairs. :class:`~ucoder.callbacks.SelfTraining` calls them in order, with the barriers
between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ucoder.callbacks.merge import cumulative_pairs, merge_shards
from ucoder.ipc.round import RoundConfig, RoundRunner
from ucoder.jsonl import read_jsonl


class RoundStep:
    """Generate and refilter training data with the current weights.

    Args:
        round_config: the IPC round (problems, tests, samples, selection, ...).
        keep_previous: train on all rounds' selected pairs so far (``False``: only the
            latest round's).
        stop_when_empty: stop the fit when a round selects no pair that is not already
            in the training data.
        avoid_repeats: give the round the earlier rounds' problems, so it does not
            generate them again.
        batch_size: rows decoded together by the sampler.
        seed: base seed; round k on rank r uses ``seed + 1000 * k + r``.
    """

    def __init__(self, round_config: RoundConfig | None = None, keep_previous: bool = True,
                 stop_when_empty: bool = True, avoid_repeats: bool = True,
                 batch_size: int = 256, seed: int = 0):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: expected an "
                             "integer >= 1")
        self.round_config = round_config or RoundConfig()
        self.keep_previous, self.stop_when_empty = keep_previous, stop_when_empty
        self.avoid_repeats = avoid_repeats
        self.batch_size, self.seed = batch_size, seed

    def make_sampler(self, model, tokenizer, index: int, show_progress: bool = False):
        """The generator round ``index`` uses: ``model`` through the HF sampler (override
        to use another backend)."""
        from ucoder.generation import Sampler

        return Sampler(model, tokenizer, batch_size=self.batch_size,
                       show_progress=show_progress)

    def generate(self, sampler, out_dir: Path, index: int, *, rank: int = 0, world: int = 1,
                 extra_score: Callable[[list[str], list[str]], list[float]] | None = None,
                 avoid: list[str] | None = None) -> dict:
        """Run (or resume) round ``index``'s share of rank ``rank`` into ``out_dir``."""
        import torch

        config = self.round_config
        if world > 1:
            config = replace(config, problems=math.ceil(config.problems / world))
        runner = RoundRunner(sampler, out_dir, config, extra_score=extra_score,
                             seed=self.seed + 1000 * index + rank,
                             avoid_problems=avoid if self.avoid_repeats else None)
        with torch.no_grad():
            return runner.run()

    @staticmethod
    def merge(round_dir: Path, world: int) -> dict:
        """Join the shards ``round_dir/rank_<r>`` into ``round_dir`` (rank 0's job)."""
        return merge_shards(round_dir, [round_dir / f"rank_{r}" for r in range(world)])

    def training_set(self, previous_file: str | None, round_dir: Path,
                     index: int) -> tuple[list[dict], int]:
        """The next training pairs and how many of the round's picks are new."""
        previous = read_jsonl(previous_file) if previous_file else []
        return cumulative_pairs(previous, read_jsonl(round_dir / "selected.jsonl"),
                                keep_previous=self.keep_previous, round_index=index)

    @staticmethod
    def earlier_problems(root: Path, index: int) -> list[str]:
        """Descriptions of the problems rounds ``0 .. index-1`` wrote (all shards)."""
        texts: list[str] = []
        for k in range(index):
            for path in sorted((root / f"round_{k}").glob("**/problems.jsonl")):
                texts += [r.get("description", "") for r in read_jsonl(path)]
        return [t for t in dict.fromkeys(texts) if t]
