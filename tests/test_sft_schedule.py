"""The learning-rate schedule follows the data each epoch trains on; throughput counts
training steps only."""

from __future__ import annotations

import time

import lightning as L
import pytest

from tests.test_sft import ROWS, make_module, make_tiny_model_dir, make_trainer
from ucoder.data import SFTDataModule
from ucoder.jsonl import write_jsonl


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


class _SwapData(L.Callback):
    """A round in miniature: new data at fit start and after every epoch, plus a slow
    pause in the epoch hook (as a round or an evaluation takes time)."""

    def __init__(self, files: list[str], pause: float = 0.0):
        self.files, self.pause, self.lrs = files, pause, []

    def on_fit_start(self, trainer, module):
        trainer.datamodule.set_train_file(self.files[0])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, module):
        time.sleep(self.pause)
        trainer.datamodule.set_train_file(self.files[min(trainer.current_epoch + 1, 1)])


def test_cosine_schedule_is_sized_for_each_rounds_data(tiny_dir, tmp_path):
    files = [str(write_jsonl(tmp_path / "r0.jsonl", ROWS[:8])),
             str(write_jsonl(tmp_path / "r1.jsonl", ROWS))]
    swap = _SwapData(files)
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=2, callbacks=[swap],
                           reload_dataloaders_every_n_epochs=1)
    module = make_module(tiny_dir, schedule="cosine", warmup_steps=0, adapter_dir="")
    trainer.fit(module, SFTDataModule(batch_size=4))
    # 2 steps on round 0's data, then 4 on round 1's: the cosine ends with the fit, not
    # after the 4 steps the first file alone would have given (which trained at lr 0).
    assert trainer.global_step == 6 and len(swap.lrs) == 6
    assert all(lr > 0 for lr in swap.lrs)
    assert swap.lrs[0] == pytest.approx(5e-3)
    assert all(a > b for a, b in zip(swap.lrs[2:], swap.lrs[3:]))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_unsized_schedule_is_refused_naming_the_option(tiny_dir, tmp_path):
    data = str(write_jsonl(tmp_path / "d.jsonl", ROWS[:8]))
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=-1)
    with pytest.raises(ValueError, match="model.schedule='cosine'.*trainer.max_epochs"):
        trainer.fit(make_module(tiny_dir, schedule="cosine", adapter_dir=""),
                    SFTDataModule(train_file=data, batch_size=4))


def test_tokens_per_s_leaves_out_the_epoch_hooks(tiny_dir, tmp_path):
    files = [str(write_jsonl(tmp_path / "r.jsonl", ROWS[:8]))] * 2
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=2,
                           reload_dataloaders_every_n_epochs=1,
                           callbacks=[_SwapData(files, pause=4.0)])
    module = make_module(tiny_dir, adapter_dir="")
    trainer.fit(module, SFTDataModule(batch_size=4))
    rate = float(trainer.callback_metrics["train/tokens_per_s"])
    # The seconds behind the rate: counting the 4 s pause between the epochs (where a
    # round would run) would make them at least 4.
    assert 0 < module._run_tokens / rate < 4.0
