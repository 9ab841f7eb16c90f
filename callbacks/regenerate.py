"""RegenerateData: run an IPC round with the weights being trained, then train on its picks.

Timeline with ``every_n_epochs=1`` and ``max_epochs=E``: round 0 runs at fit start with
the initial weights and epoch 0 trains on it; at the end of epoch k (k < E-1) round k+1
runs with the updated adapter and epoch k+1 trains on it (plus the earlier rounds' pairs
when ``keep_previous``). The Trainer must reload its dataloaders every epoch
(``reload_dataloaders_every_n_epochs: 1``) so it sees the new file.

Resuming: before a round starts, the callback writes the Trainer's ``last.ckpt`` (when a
``ModelCheckpoint`` is configured), so a run killed during a round restarts from the
weights that round was generating with; the round itself resumes from its finished stage
files (see :class:`ucoder.ipc.round.RoundRunner`).

Under DDP every rank generates ``problems / world_size`` problems into
``round_<k>/rank_<r>/``; rank 0 merges them into ``round_<k>/`` and writes the training
file; every rank then reads the same file.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ucoder.callbacks.base import RoundListener, check_every, find_callback, log, loop_dir
from ucoder.callbacks.merge import cumulative_pairs, merge_shards
from ucoder.ipc.round import RoundConfig, RoundRunner
from ucoder.jsonl import read_json, read_jsonl, write_jsonl


class RegenerateData(Callback):
    """Regenerate and refilter the SFT data between epochs with the current weights.

    Args:
        round_config: the IPC round (problems, tests, samples, selection, ...).
        every_n_epochs: run a new round after every this many epochs.
        keep_previous: train on all rounds' selected pairs so far (``False``: only the
            latest round's).
        stop_when_empty: stop the fit when a round selects no pair that is not already
            in the training data.
        out_dir: where ``round_<k>/`` and ``train_round_<k>.jsonl`` go (default: the
            Trainer's ``default_root_dir``).
        batch_size: rows decoded together by the sampler.
        seed: base seed; round k on rank r uses ``seed + 1000 * k + r``.
    """

    def __init__(self, round_config: RoundConfig | None = None, every_n_epochs: int = 1,
                 keep_previous: bool = True, stop_when_empty: bool = True,
                 out_dir: str | None = None, batch_size: int = 64, seed: int = 0):
        check_every(every_n_epochs)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: expected >= 1")
        self.round_config = round_config or RoundConfig()
        self.every_n_epochs = every_n_epochs
        self.keep_previous = keep_previous
        self.stop_when_empty = stop_when_empty
        self.out_dir = out_dir
        self.batch_size = batch_size
        self.seed = seed
        # Set by RefitProbe when the probe should take part in selection.
        self.extra_score = None
        self.rounds: list[dict[str, Any]] = []  # one summary per finished round
        self.train_file: str | None = None
        self.epochs_done = 0

    # -- hooks ----------------------------------------------------------------------------
    def _epoch(self, trainer) -> int:
        # Lightning restores the loop's epoch only after on_fit_start; our own count of
        # finished epochs comes back with the callback state, before it.
        return max(trainer.current_epoch, self.epochs_done)

    def on_fit_start(self, trainer, pl_module) -> None:
        needed = self._epoch(trainer) // self.every_n_epochs
        if len(self.rounds) <= needed:
            self._run_round(trainer, pl_module, needed)
        elif self.train_file:  # resumed after this epoch's round: read the same data
            self._point_data(trainer, self.train_file)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        next_epoch = trainer.current_epoch + 1
        self.epochs_done = next_epoch
        if trainer.should_stop or next_epoch % self.every_n_epochs:
            return
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= next_epoch:
            return  # no epoch left to train on a new round
        self._save_resume_point(trainer)
        self._run_round(trainer, pl_module, next_epoch // self.every_n_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "train_file": self.train_file,
                "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds = list(state.get("rounds", []))
        self.train_file = state.get("train_file")
        self.epochs_done = int(state.get("epochs_done", 0))

    # -- a round --------------------------------------------------------------------------
    def make_sampler(self, pl_module):
        """The generator a round uses: the module's own (adapter-wrapped) model."""
        from ucoder.generation import Sampler

        return Sampler(pl_module.model, pl_module.tokenizer, batch_size=self.batch_size,
                       show_progress=pl_module.trainer.is_global_zero)

    def _run_round(self, trainer, pl_module, index: int) -> None:
        root = loop_dir(trainer, self.out_dir)
        round_dir = root / f"round_{index}"
        world, rank = trainer.world_size, trainer.global_rank
        config = self.round_config
        if world > 1:
            config = replace(config, problems=math.ceil(config.problems / world))
        shard_dir = round_dir if world == 1 else round_dir / f"rank_{rank}"
        log.info("round %d: generating with the current weights into %s", index, shard_dir)
        start = time.perf_counter()
        runner = RoundRunner(self.make_sampler(pl_module), shard_dir, config,
                             extra_score=self.extra_score, seed=self.seed + 1000 * index + rank)
        with torch.no_grad():
            runner.run()
        trainer.strategy.barrier("ucoder_round_generated")
        if trainer.is_global_zero and world > 1:
            merge_shards(round_dir, [round_dir / f"rank_{r}" for r in range(world)])
        trainer.strategy.barrier("ucoder_round_merged")
        stats = read_json(round_dir / "stats.json") or {}  # merged under DDP
        # Every rank computes the (small, deterministic) training set; rank 0 writes it.
        pairs, new = cumulative_pairs(self._previous_pairs(index),
                                      read_jsonl(round_dir / "selected.jsonl"),
                                      keep_previous=self.keep_previous, round_index=index)
        train_file = root / f"train_round_{index}.jsonl"
        if trainer.is_global_zero:
            write_jsonl(train_file, pairs)
        trainer.strategy.barrier("ucoder_train_file_written")
        summary = {"round": index, "epoch": self._epoch(trainer),
                   "dir": str(round_dir),
                   "selected": int(stats.get("selected", 0)), "new_pairs": new,
                   "train_pairs": len(pairs), "train_file": str(train_file),
                   "seconds": round(time.perf_counter() - start, 1), "stats": stats}
        self.rounds = [r for r in self.rounds if r["round"] != index] + [summary]
        log.info("round %d: %d selected, %d new, training on %d pairs (%.0f s)", index,
                 summary["selected"], summary["new_pairs"], len(pairs), summary["seconds"])
        for cb in trainer.callbacks:
            if isinstance(cb, RoundListener):
                cb.on_round_end(trainer, pl_module, index, round_dir, stats)
        if pairs:
            self._point_data(trainer, str(train_file))
        if summary["new_pairs"] == 0 and self.stop_when_empty:
            log.warning("round %d selected nothing new: stopping (stop_when_empty=True)", index)
            trainer.should_stop = True

    def _previous_pairs(self, index: int) -> list[dict]:
        """The training pairs of the latest earlier round (empty before round 1)."""
        last = max((r for r in self.rounds if r["round"] < index), key=lambda r: r["round"],
                   default=None)
        return read_jsonl(last["train_file"]) if last else []

    def _point_data(self, trainer, path: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "set_train_file"):
            raise TypeError("RegenerateData needs a DataModule with set_train_file() "
                            "(ucoder.data.SFTDataModule)")
        datamodule.set_train_file(path)
        self.train_file = path

    def _save_resume_point(self, trainer) -> None:
        checkpoint = find_callback(trainer, ModelCheckpoint)
        if checkpoint is None or not checkpoint.dirpath:
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path)

