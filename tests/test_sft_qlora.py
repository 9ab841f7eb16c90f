"""Real bitsandbytes 4-bit QLoRA on the embedded SmolLM2-135M, on CPU, end to end."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ucoder.data import SFTDataModule
from ucoder.jsonl import write_jsonl
from ucoder.models import LoraOptions, load_model
from ucoder.sft import UCoderModule

PAIRS = [{"prompt": "def add(a, b):\n", "completion": "    return a + b\n"},
         {"prompt": "def is_even(n):\n", "completion": "    return n % 2 == 0\n"}]


class _Losses(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, *args):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.integration
def test_qlora_4bit_lowers_loss_trains_only_lora_and_adapter_reloads(tmp_path):
    import bitsandbytes as bnb

    module = UCoderModule(load_in_4bit=True, lora=LoraOptions(r=8, alpha=16, dropout=0.0),
                          lr=3e-3, warmup_steps=0, schedule="constant", adapter_dir="")
    module.configure_model()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in module.modules())
    frozen = {n: t.detach().clone() for n, t in [*module.named_parameters(),
                                                 *module.named_buffers()]
              if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)

    dm = SFTDataModule(train_file=str(write_jsonl(tmp_path / "d.jsonl", PAIRS)),
                       batch_size=2, format="plain")
    losses = _Losses()
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[losses])
    trainer.fit(module, dm)  # the same batch four times
    assert len(losses.losses) == 4 and losses.losses[-1] < losses.losses[0]

    for n, t in [*module.named_parameters(), *module.named_buffers()]:
        if n in frozen:
            assert torch.equal(t, frozen[n]), f"base weight {n} changed"
    assert all(not torch.equal(p, lora[n]) for n, p in module.named_parameters() if n in lora)

    adapter = module.save_adapter(tmp_path / "adapter")
    reloaded, tok = load_model(load_in_4bit=True, adapter=str(adapter), device="cpu")
    ids = torch.tensor([tok("def add(a, b):\n    return").input_ids])
    module.model.eval()
    reloaded.eval()
    with torch.no_grad():
        ours, theirs = module.model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
