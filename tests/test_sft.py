"""UCoderModule on a tiny random Llama: loss, training, checkpoints, adapters, resume."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.data import SFTDataModule
from ucoder.jsonl import write_jsonl
from ucoder.models import LoraOptions, ModelLoadError
from ucoder.sft import UCoderModule, completion_loss, lr_lambda

ROWS = [{"prompt": f"Write function number {i}.",
         "completion": "def f(x):\n    return x" + " + 1" * (i % 5) + "\n"} for i in range(16)]


def make_tiny_model_dir(path: Path) -> str:
    """Save a tiny random Llama and its tokenizer where ``load_model`` can read them."""
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


def make_module(model_dir: str, **kw) -> UCoderModule:
    kw = {"load_in_4bit": False, "lr": 5e-3, "warmup_steps": 0,
          "lora": LoraOptions(r=4, alpha=8, dropout=0.0), **kw}
    return UCoderModule(model=model_dir, **kw)


def make_trainer(root: Path, **kw) -> L.Trainer:
    kw = {"accelerator": "cpu", "devices": 1, "max_steps": 3, "logger": False,
          "enable_progress_bar": False, "enable_model_summary": False,
          "default_root_dir": str(root), **kw}
    return L.Trainer(**kw)


def test_lr_schedule_warms_up_then_decays():
    f = [lr_lambda(s, warmup=4, total=20) for s in range(25)]
    assert f[0] < f[1] < f[3] < f[4] == 1.0
    assert math.isclose(f[12], 0.5) and f[20] == f[24] == 0.0
    assert lr_lambda(10, warmup=0, total=20, schedule="constant") == 1.0


def test_completion_loss_matches_full_logits_and_chunks_match(tiny_dir):
    torch.manual_seed(0)
    model = tiny_llama(tiny_tokenizer(), hidden_size=64)
    ids = torch.randint(5, 300, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    ref = model(input_ids=ids, labels=labels).loss
    hidden = model.model(input_ids=ids).last_hidden_state
    loss, n = completion_loss(hidden, labels, model.lm_head)
    assert n == 2 * 7 and torch.allclose(loss, ref, atol=1e-6)
    (g_full,) = torch.autograd.grad(loss, model.lm_head.weight, retain_graph=True)
    chunked, _ = completion_loss(hidden, labels, model.lm_head, chunk_size=3)
    (g_chunk,) = torch.autograd.grad(chunked, model.lm_head.weight)
    assert torch.allclose(chunked, loss, atol=1e-6) and torch.allclose(g_full, g_chunk, atol=1e-6)


def test_packed_batch_gives_the_same_loss_as_padded(tiny_dir, tmp_path):
    module = make_module(tiny_dir)
    module.configure_model()
    path = write_jsonl(tmp_path / "d.jsonl", ROWS[:4])
    losses = {}
    for pack in (False, True):
        dm = SFTDataModule(train_file=str(path), batch_size=4, pack=pack)
        dm.set_tokenizer(module.tokenizer)
        dm.setup("fit")
        batch = dm.train_dataloader().dataset[0]
        with torch.no_grad():
            losses[pack] = module(**batch)
    assert losses[True][1] == losses[False][1]  # same number of target tokens
    assert torch.allclose(losses[True][0], losses[False][0], atol=1e-5)


def test_missing_lora_target_lists_the_linear_modules(tiny_dir):
    module = make_module(tiny_dir, lora=LoraOptions(target_modules=["qkv_proj"]))
    with pytest.raises(ModelLoadError, match=r"lora.target_modules=\['qkv_proj'\].*q_proj"):
        module.configure_model()


def test_fit_trains_lora_only_and_writes_small_checkpoints_and_adapters(tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    module = make_module(tiny_dir)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    dm = SFTDataModule(train_file=str(write_jsonl(tmp_path / "d.jsonl", ROWS)), batch_size=8)
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=2, log_every_n_steps=1,
                           logger=L.pytorch.loggers.CSVLogger(tmp_path))
    trainer.fit(module, dm)
    assert trainer.global_step == 4
    for n, p in module.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == ("lora_" in n), n  # LoRA moved, the base is bit-identical
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text()
    assert "train/loss" in metrics and "train/tokens_per_s" in metrics

    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])

    adapter = tmp_path / "adapters" / "epoch_1"
    assert (tmp_path / "adapters" / "epoch_0" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    reloaded = PeftModel.from_pretrained(base, adapter).eval()
    ids = torch.tensor([module.tokenizer("def f(x): return x").input_ids])
    module.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, module.model(input_ids=ids).logits,
                              atol=1e-5)


class _Killed(RuntimeError):
    pass


class _StopAfter(L.Callback):
    """Simulates a killed job: raises after ``n`` optimizer steps (a checkpoint is saved)."""

    def __init__(self, n: int):
        self.n = n

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.n:
            trainer.save_checkpoint(Path(trainer.default_root_dir) / "stopped.ckpt")
            raise _Killed("simulated crash")


class _CheckResume(L.Callback):
    def __init__(self, ckpt: dict):
        self.ckpt, self.checked = ckpt, False

    def on_train_start(self, trainer, module):
        assert trainer.global_step == self.ckpt["global_step"] == 2
        saved = self.ckpt["optimizer_states"][0]
        state = trainer.optimizers[0].state_dict()
        assert saved["param_groups"][0]["lr"] == state["param_groups"][0]["lr"]
        assert len(state["state"]) == len(saved["state"]) > 0
        for k, v in saved["state"].items():
            for name in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state["state"][k][name], v[name])
        for name, value in self.ckpt["state_dict"].items():
            assert torch.equal(module.state_dict()[name], value)
        self.checked = True


def test_resume_mid_epoch_restores_optimizer_and_step(tiny_dir, tmp_path):
    data = str(write_jsonl(tmp_path / "d.jsonl", ROWS))
    trainer = make_trainer(tmp_path, max_steps=6, callbacks=[_StopAfter(2)])
    with pytest.raises(_Killed):
        trainer.fit(make_module(tiny_dir), SFTDataModule(train_file=data, batch_size=4))
    assert trainer.global_step == 2 and trainer.current_epoch == 0  # stopped inside epoch 0

    ckpt_path = tmp_path / "stopped.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    check = _CheckResume(ckpt)
    trainer = make_trainer(tmp_path, max_steps=6, callbacks=[check])
    trainer.fit(make_module(tiny_dir), SFTDataModule(train_file=data, batch_size=4),
                ckpt_path=str(ckpt_path))
    assert check.checked and trainer.global_step == 6


def test_export_copies_or_merges_the_adapter(tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ucoder.cli import main as ucoder_main

    module = make_module(tiny_dir)
    module.configure_model()
    with torch.no_grad():  # a non-zero adapter, so merging changes the weights
        for n, p in module.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    adapter = module.save_adapter(tmp_path / "adapter")
    assert ucoder_main(["export", "--adapter", str(adapter), "--out",
                        str(tmp_path / "merged"), "--merge"]) == 0
    assert ucoder_main(["export", "--adapter", str(adapter), "--out",
                        str(tmp_path / "copy")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir),
                                     tmp_path / "copy").eval()
    ids = torch.tensor([module.tokenizer("def f(x): return x").input_ids])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, peft(input_ids=ids).logits,
                              atol=1e-5)
    with pytest.raises(SystemExit, match="not a PEFT adapter"):
        ucoder_main(["export", "--adapter", str(tmp_path), "--out", str(tmp_path / "x")])


class _Regenerate(L.Callback):
    """Stands in for the loop's regenerate callback: new data at fit start and per epoch."""

    def __init__(self, files: list[str]):
        self.files, self.batches = files, []

    def on_fit_start(self, trainer, module):
        trainer.datamodule.set_train_file(self.files[0])

    def on_train_epoch_start(self, trainer, module):
        self.batches.append(trainer.num_training_batches)

    def on_train_epoch_end(self, trainer, module):
        trainer.datamodule.set_train_file(self.files[1])


def test_train_file_set_by_a_callback_and_reloaded_between_epochs(tiny_dir, tmp_path):
    files = [str(write_jsonl(tmp_path / "r0.jsonl", ROWS[:8])),
             str(write_jsonl(tmp_path / "r1.jsonl", ROWS))]
    regen = _Regenerate(files)
    trainer = make_trainer(tmp_path, max_steps=-1, max_epochs=2, callbacks=[regen],
                           reload_dataloaders_every_n_epochs=1)
    module = make_module(tiny_dir, warmup_ratio=0.1)
    trainer.fit(module, SFTDataModule(batch_size=4))  # no train_file in the config
    assert regen.batches == [2, 4] and trainer.global_step == 6
    assert (tmp_path / "adapters" / "epoch_1" / "adapter_model.safetensors").is_file()
