"""SelfTraining: the self-training loop as one Lightning callback, its steps in one order.

At fit start, and at the end of every ``every_n_epochs``-th epoch that has an epoch after
it, the loop runs these steps, in this order, whatever the order of the Trainer's
callbacks:

1. evaluate greedy pass@1 (:class:`PassAtKEvaluator`; at fit start: ``before``);
2. save the resume point (``last.ckpt`` of the Trainer's checkpoint callback), then run
   the round with the current weights (:class:`RoundStep`);
3. refit the probe on the round's consensus labels (:class:`ProbeRefitter`);
4. plug the probe into the next round's selection (``probe.use_in_selection``);
5. point the DataModule at the new training file;
6. write the report (:class:`ReportWriter`).

Timeline with ``every_n_epochs=1`` and ``max_epochs=E``: round 0 runs at fit start with
the initial weights and epoch 0 trains on it; at the end of epoch k (k < E-1) round k+1
runs with the updated adapter and epoch k+1 trains on it. The Trainer must reload its
dataloaders every epoch (``reload_dataloaders_every_n_epochs: 1``).

Under DDP every rank generates its share of the problems into ``round_<k>/rank_<r>/``,
rank 0 merges them, every rank reads the same training file; the barriers are all in
:meth:`SelfTraining._sync`. A run killed during a round restarts from the resume point
and the round's finished stage files (:class:`ucoder.ipc.round.RoundRunner`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.callbacks import Callback

from ucoder.callbacks.base import GenerationModel, check_every, log, loop_dir
from ucoder.callbacks.evaluate import PassAtKEvaluator
from ucoder.callbacks.probe import ProbeRefitter
from ucoder.callbacks.report import ReportWriter
from ucoder.callbacks.rounds import RoundStep
from ucoder.jsonl import read_json, read_jsonl, write_jsonl

STATE_KEYS = ("rounds", "probes", "evals", "epochs", "train_file", "epochs_done")


class SelfTraining(Callback):
    """Turn SFT into the self-training loop: evaluate, regenerate, refit, retrain, report.

    Args:
        round_step: how a round runs and becomes training data.
        evaluate: greedy pass@1 before training and after epochs (None: no evaluation).
        probe: the hidden-state probe refit every round (None: no probe).
        report: the report writer (None: no report).
        every_n_epochs: run a new round after every this many epochs.
        generation: what rounds and evaluations generate with: ``training_weights`` (the
            module's own, possibly 4-bit, adapter-wrapped model) or ``merged_copy`` (a
            plain copy with the adapter merged in, built for each step and dropped
            after it: faster decoding, more memory).
        out_dir: where rounds, training files, probes and the report go (default: the
            Trainer's ``default_root_dir``).
    """

    def __init__(self, round_step: RoundStep | None = None,
                 evaluate: PassAtKEvaluator | None = None, probe: ProbeRefitter | None = None,
                 report: ReportWriter | None = None, every_n_epochs: int = 1,
                 generation: Literal["training_weights", "merged_copy"] = "training_weights",
                 out_dir: str | None = None):
        check_every(every_n_epochs)
        if generation not in ("training_weights", "merged_copy"):
            raise ValueError(f"generation={generation!r} is not allowed: expected "
                             "'training_weights' or 'merged_copy'")
        self.round_step = round_step or RoundStep()
        self.evaluate, self.probe, self.report = evaluate, probe, report
        self.every_n_epochs, self.generation, self.out_dir = every_n_epochs, generation, out_dir
        _check_probe_use(self.probe, self.round_step)
        self.rounds: list[dict[str, Any]] = []  # one summary per finished round
        self.probes: list[dict[str, Any]] = []  # one fit record per round
        self.evals: list[dict[str, Any]] = []   # {"when": "before"|"epoch_<k>", ...}
        self.epochs: list[dict[str, Any]] = []  # {"epoch", "step", "train_loss"}
        self.train_file: str | None = None
        # Finished epochs, kept in our own state: Lightning 2.6 restores callback state
        # before on_fit_start but the loop's epoch only after it (Trainer._run), and the
        # first dataloader is built right after, so the resumed epoch's round must be
        # chosen from this count, not from trainer.current_epoch.
        self.epochs_done = 0
        self._extra_score = None  # the plugged-in probe's scorer, if any

    # -- hooks ----------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.evaluate is not None:
            self.evaluate.problems  # noqa: B018 - a wrong benchmark fails before the model loads

    def on_fit_start(self, trainer, pl_module) -> None:
        index = self.epochs_done // self.every_n_epochs
        with GenerationModel(pl_module, self.generation) as gen:
            self._evaluate(trainer, pl_module, gen, "before")
            self._plug_saved_probe(pl_module)  # resumed: the selection probe as it was
            if all(r["round"] != index for r in self.rounds):
                self._round(trainer, pl_module, gen, index)
            elif self.train_file:  # resumed after this epoch's round: the same data
                self._point_data(trainer, self.train_file)
        self._write_report(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch, loss = trainer.current_epoch, trainer.callback_metrics.get("train/loss")
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [
            {"epoch": epoch, "step": trainer.global_step,
             "train_loss": None if loss is None else float(loss)}]
        self.epochs_done = epoch + 1
        with GenerationModel(pl_module, self.generation) as gen:
            if self.evaluate is not None and self.evaluate.due(epoch):
                result = self._evaluate(trainer, pl_module, gen, f"epoch_{epoch}")
                pl_module.log("eval/pass@1", result["pass@1"], prog_bar=True,
                              rank_zero_only=True)
            if self._round_due(trainer):
                self._save_resume_point(trainer)
                self._round(trainer, pl_module, gen, self.epochs_done // self.every_n_epochs)
        self._write_report(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        path = self._write_report(trainer)
        if path is not None:
            log.info("report: %s", path)

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in STATE_KEYS:
            if key in state:
                value = state[key]
                setattr(self, key, list(value) if isinstance(value, list) else value)

    # -- the steps ------------------------------------------------------------------------
    def _evaluate(self, trainer, pl_module, gen, when: str) -> dict[str, Any]:
        done = next((h for h in self.evals if h["when"] == when), None)
        if done is not None or self.evaluate is None:
            return done or {}
        start = time.perf_counter()
        solved = self._sum(trainer, self.evaluate.solved(
            gen.model, pl_module.tokenizer, rank=trainer.global_rank,
            world=trainer.world_size, show_progress=trainer.is_global_zero))
        total = len(self.evaluate.problems)
        result = {"when": when, "epoch": trainer.current_epoch, "step": trainer.global_step,
                  "pass@1": solved / total, "solved": solved, "problems": total,
                  "seconds": round(time.perf_counter() - start, 1)}
        self.evals.append(result)
        log.info("eval %s: greedy pass@1 %.3f (%d/%d) on %s", when, result["pass@1"], solved,
                 total, self.evaluate.benchmark)
        if when == "before" and trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics({"eval/pass@1": result["pass@1"]},
                                       step=trainer.global_step)
        return result

    def _round(self, trainer, pl_module, gen, index: int) -> None:
        """Run round ``index``, refit and plug in the probe, point the data at the result."""
        root, step = loop_dir(trainer, self.out_dir), self.round_step
        round_dir = root / f"round_{index}"
        world, rank = trainer.world_size, trainer.global_rank
        shard_dir = round_dir if world == 1 else round_dir / f"rank_{rank}"
        log.info("round %d: generating with the current weights into %s", index, shard_dir)
        start = time.perf_counter()
        sampler = step.make_sampler(gen.model, pl_module.tokenizer, index,
                                    show_progress=trainer.is_global_zero)
        step.generate(sampler, shard_dir, index, rank=rank, world=world,
                      extra_score=self._extra_score, avoid=step.earlier_problems(root, index))
        self._sync(trainer, "round_generated")
        if trainer.is_global_zero and world > 1:
            step.merge(round_dir, world)
        self._sync(trainer, "round_merged")
        # Every rank computes the (small, deterministic) training set; rank 0 writes it.
        pairs, new = step.training_set(self._previous_file(index), round_dir, index)
        train_file = root / f"train_round_{index}.jsonl"
        if trainer.is_global_zero:
            write_jsonl(train_file, pairs)
        self._sync(trainer, "train_file_written")
        stats = read_json(round_dir / "stats.json", {})
        self.rounds = [r for r in self.rounds if r["round"] != index] + [{
            "round": index, "epoch": self.epochs_done, "dir": str(round_dir),
            "selected": int(stats.get("selected", 0)), "new_pairs": new,
            "train_pairs": len(pairs), "train_file": str(train_file),
            "seconds": round(time.perf_counter() - start, 1), "stats": stats}]
        log.info("round %d: %d selected, %d new, training on %d pairs", index,
                 self.rounds[-1]["selected"], new, len(pairs))
        self._refit_probe(trainer, pl_module, round_dir, index)
        if pairs:
            self._point_data(trainer, str(train_file))
        if new == 0 and step.stop_when_empty:
            log.warning("round %d selected nothing new: stopping (stop_when_empty=True)", index)
            trainer.should_stop = True

    def _refit_probe(self, trainer, pl_module, round_dir: Path, index: int) -> None:
        """Steps 3 and 4: fit the probe on the round's labels; plug it into selection."""
        if self.probe is None:
            return
        path = round_dir / "consensus.jsonl"
        rows = read_jsonl(path) if path.exists() else []
        probe, record = self.probe.fit(pl_module.model, pl_module.tokenizer, rows, index)
        if probe is not None:
            out = loop_dir(trainer, self.out_dir) / "probes" / f"round_{index}"
            if trainer.is_global_zero:
                self.probe.save(probe, out, pl_module.model)
            self._sync(trainer, "probe_saved")
            record["path"] = str(out)
        if self.probe.use_in_selection:
            self._plug(pl_module, probe, record, index)
        self.probes = [h for h in self.probes if h["round"] != index] + [record]

    def _plug(self, pl_module, probe, record: dict, index: int) -> None:
        """The next selection uses this round's probe only when it beat log-prob held out;
        otherwise none (an older round's probe read an older model)."""
        used, why = self.probe.admits(record) if probe is not None else (False, record.get(
            "skipped", "no probe"))
        record["used_in_selection"], record["selection_reason"] = used, why
        self._extra_score = (self.probe.scorer(pl_module.model, pl_module.tokenizer, probe)
                             if used else None)
        log.info("selection after round %d: %s the probe (%s)", index,
                 "with" if used else "without", why)

    def _plug_saved_probe(self, pl_module) -> None:
        """Resumed: the next selection uses the last saved probe again."""
        if self.probe is None or not self.probe.use_in_selection or not self.probes:
            return
        last = max(self.probes, key=lambda h: h["round"])
        if last.get("path") and last.get("used_in_selection", True):
            probe = self.probe.load(last["path"], pl_module.model)
            self._extra_score = self.probe.scorer(pl_module.model, pl_module.tokenizer, probe)

    def _point_data(self, trainer, path: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "set_train_file"):
            raise TypeError("SelfTraining needs a DataModule with set_train_file() "
                            "(ucoder.data.SFTDataModule)")
        datamodule.set_train_file(path)
        self.train_file = path

    def _write_report(self, trainer) -> Path | None:
        if self.report is None or not trainer.is_global_zero:
            return None
        ev = self.evaluate
        bench = {"name": ev.benchmark, "problems": ev.limit} if ev is not None else None
        root = loop_dir(trainer, self.out_dir)
        report = self.report.build(self.state_dict(), root,
                                   every_n_epochs=self.every_n_epochs, benchmark=bench)
        return self.report.write(report, root)

    # -- helpers --------------------------------------------------------------------------
    def _round_due(self, trainer) -> bool:
        """A round after this epoch: on schedule, not stopped, and an epoch left for it."""
        if trainer.should_stop or self.epochs_done % self.every_n_epochs:
            return False
        return trainer.max_epochs is None or not 0 <= trainer.max_epochs <= self.epochs_done

    def _previous_file(self, index: int) -> str | None:
        """The training file of the latest earlier round (None before round 1)."""
        last = max((r for r in self.rounds if r["round"] < index), key=lambda r: r["round"],
                   default=None)
        return last["train_file"] if last else None

    def _save_resume_point(self, trainer) -> None:
        """``last.ckpt`` before a round: a run killed in the round restarts from it."""
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or not getattr(checkpoint, "dirpath", None):
            return
        trainer.save_checkpoint(Path(checkpoint.dirpath) /
                                f"{checkpoint.CHECKPOINT_NAME_LAST}.ckpt")

    @staticmethod
    def _sync(trainer, name: str) -> None:
        """Every DDP barrier of the loop (a no-op on one process)."""
        trainer.strategy.barrier(f"ucoder_{name}")

    @staticmethod
    def _sum(trainer, value: int) -> int:
        if trainer.world_size == 1:
            return value
        return int(trainer.strategy.reduce(torch.tensor(float(value)),
                                           reduce_op="sum").item())


def _check_probe_use(probe: ProbeRefitter | None, step: RoundStep) -> None:
    """``use_in_selection`` must change something: a weight and a policy that use it."""
    if probe is None or not probe.use_in_selection:
        return
    from ucoder.ipc.policies import get_policy

    selection = step.round_config.selection
    if selection.extra_weight == 0 or not get_policy(selection.policy).uses_extra_score:
        raise ValueError(
            "probe.use_in_selection=true has no effect with "
            f"round_step.round_config.selection.extra_weight={selection.extra_weight!r} and "
            f"selection.policy={selection.policy!r}: set extra_weight to a non-zero number "
            "and a policy that ranks by the extra score, or use_in_selection=false")
