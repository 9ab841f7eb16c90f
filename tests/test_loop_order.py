"""The loop does not depend on the order of the Trainer's callbacks, through a kill and a
resume: the same report (time fields aside) with the callbacks listed either way."""

from __future__ import annotations

import json

import pytest
from lightning import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from tests.test_loop import (
    ScriptedRound,
    ScriptedSampler,
    make_loop,
    make_parts,
    tiny_dir,  # noqa: F401 - the tiny model fixture, shared
)
from ucoder.ipc import prompts as P
from ucoder.ipc.round import RoundConfig

TIME_FIELDS = {"updated", "seconds", "stage_seconds", "seconds_total",
               "pairs_per_generation_minute"}


class Killed(RuntimeError):
    """Stands in for a crash (kill -9, OOM) in the middle of round 1."""


class KilledInRound1(ScriptedSampler):
    def sample(self, prompts, n=1, *, prefix="", **kwargs):
        if prefix == P.SOLUTION_PREFIX and not prompts[0].startswith("Write the docstring"):
            raise Killed("killed while sampling round 1's candidates")
        return super().sample(prompts, n, prefix=prefix, **kwargs)


class KillingRound(ScriptedRound):
    def make_sampler(self, model, tokenizer, index, show_progress=False):
        self.sampler = (KilledInRound1 if index == 1 else ScriptedSampler)(index)
        return self.sampler


def fit(model_dir, root, loop, order: str, ckpt_path=None):
    module, data, _ = make_parts(model_dir)
    others = [ModelCheckpoint(dirpath=root / "checkpoints", save_last=True),
              EarlyStopping(monitor="eval/pass@1", mode="max", patience=5)]
    callbacks = [*others, loop] if order == "loop_last" else [loop, *reversed(others)]
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, log_every_n_steps=1,
                      logger=CSVLogger(root, name="logs"), enable_progress_bar=False,
                      enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
                      default_root_dir=root, callbacks=callbacks, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def without_time(value):
    if isinstance(value, dict):
        return {k: without_time(v) for k, v in value.items() if k not in TIME_FIELDS}
    if isinstance(value, list):
        return [without_time(v) for v in value]
    return value


def run_killed_and_resumed(model_dir, root, order: str) -> dict:
    killer = make_loop()
    killer.round_step = KillingRound(RoundConfig(problems=2, tests=3, samples=4), batch_size=4)
    with pytest.raises(Killed):
        fit(model_dir, root, killer, order)
    assert [r["round"] for r in killer.rounds] == [0]  # died inside round 1
    done = (root / "round_1" / "tests.jsonl").stat().st_mtime_ns

    loop = make_loop()
    trainer = fit(model_dir, root, loop, order, ckpt_path="last")
    assert [r["round"] for r in loop.rounds] == [0, 1] and trainer.current_epoch == 2
    # Round 1 went on from its finished stage files; pass@1 went into the CSV log.
    assert (root / "round_1" / "tests.jsonl").stat().st_mtime_ns == done
    assert "eval/pass@1" in (root / "logs" / "version_1" / "metrics.csv").read_text()
    return json.loads((root / "report.json").read_text())


def test_same_report_whatever_the_callback_order(tiny_dir, tmp_path):  # noqa: F811
    first = run_killed_and_resumed(tiny_dir, tmp_path / "a" / "run", "loop_last")
    second = run_killed_and_resumed(tiny_dir, tmp_path / "b" / "run", "loop_first")
    assert [r["round"] for r in first["rounds"]] == [0, 1]
    assert [e["when"] for e in first["eval"]] == ["before", "epoch_0", "epoch_1"]
    assert all(len(r["train_loss"]) == 1 for r in first["rounds"])
    assert without_time(first) == without_time(second)
