"""A two-epoch self-training fit whose rounds send the trained LoRA to the real vLLM engine.

The Trainer, UCoderModule (LoRA on the embedded model, float32), the sandbox and the
IPC stages are real, and so is the adapter hand-off to vLLM (:class:`VLLMRoundStep`).
The stage *text* comes from the scripted generator of ``tests/test_loop.py``: the
embedded model writes few parsable problems, and a round that selects nothing would
leave nothing to train on. What is checked is what the engine generates with.
"""

from __future__ import annotations

import pytest
import torch
from conftest import STATS, hf_token_logprobs
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.test_loop import ScriptedSampler
from ucoder.callbacks import SelfTraining
from ucoder.callbacks.vllm_rounds import VLLMRoundStep
from ucoder.data import SFTDataModule
from ucoder.ipc.round import RoundConfig
from ucoder.models import EMBEDDED_MODEL, LoraOptions
from ucoder.sft import UCoderModule

PROMPT = "Write a Python function that returns the square of a number."
TOL = 2e-3  # nats per token, as in test_backend


class WatchedVLLMRound(VLLMRoundStep):
    """The real hand-off, then a look at what the engine generates with it."""

    def make_sampler(self, model, tokenizer, index, show_progress=False):
        engine = super().make_sampler(model, tokenizer, index, show_progress)
        out = engine.sample([PROMPT], max_new_tokens=8, temperature=0)[0][0]
        ids = engine.encode_prompt(engine.format_prompt(PROMPT))
        model.eval()
        ref, _ = hf_token_logprobs(model, ids, out.token_ids)
        model.train()
        self.seen.append({"index": index, "adapter": engine.adapter,
                          "sum_logprob": out.sum_logprob, "hf_sum_logprob": sum(ref),
                          "tokens": len(ref)})
        return ScriptedSampler(index)


def test_second_round_generates_with_the_first_epochs_adapter(engine, tmp_path):
    torch.manual_seed(0)
    module = UCoderModule(EMBEDDED_MODEL, load_in_4bit=False, dtype="float32", lr=1e-2,
                          warmup_steps=0, schedule="constant",
                          lora=LoraOptions(r=4, alpha=8, dropout=0.0), adapter_dir="")
    step = WatchedVLLMRound(RoundConfig(problems=2, tests=3, samples=4), batch_size=4,
                            adapter_dir=str(tmp_path / "adapters"))
    step.seen, step.engine = [], engine  # one engine per test session
    loop = SelfTraining(round_step=step)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      reload_dataloaders_every_n_epochs=1, default_root_dir=tmp_path,
                      num_sanity_val_steps=0, callbacks=[
                          ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True), loop])
    try:
        trainer.fit(module, datamodule=SFTDataModule(max_length=256, batch_size=2))
    finally:
        engine.set_adapter(None)
    base = engine.sample([PROMPT], max_new_tokens=8, temperature=0)[0][0]
    assert [s["index"] for s in step.seen] == [0, 1]
    assert [r["round"] for r in loop.rounds] == [0, 1]
    first, second = step.seen
    assert second["adapter"] == str(tmp_path / "adapters" / "round_1")
    for s in step.seen:  # the engine's numbers are the training model's at that moment
        assert s["sum_logprob"] == pytest.approx(s["hf_sum_logprob"], abs=TOL * s["tokens"])
    # Round 0's adapter is the untrained one (LoRA B = 0): the base. Round 1's is trained.
    STATS["loop_adapter_shift_nats"] = abs(second["sum_logprob"] - first["sum_logprob"])
    assert second["sum_logprob"] != pytest.approx(first["sum_logprob"], abs=10 * TOL)
    engine.set_adapter(first["adapter"])
    try:
        again = engine.sample([PROMPT], max_new_tokens=8, temperature=0)[0][0]
    finally:
        engine.set_adapter(None)
    assert again.token_ids == base.token_ids
