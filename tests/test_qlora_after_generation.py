"""QLoRA still learns after the 4-bit model has generated (eval forward without grads).

On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its inference kernel at
the first such forward and then uses that kernel in training mode too, where it passes no
gradient to the layer's input: the LoRA matrices below it would silently stop learning.
The loop generates and evaluates with the training model between epochs, so training
must start from the canonical layout again (``restore_training_layout``).
"""

from __future__ import annotations

import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.models import LoraOptions, load_model, restore_training_layout


def _lora_grads(model_dir, *, generate_first: bool, restore: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, _ = load_model(model_dir, load_in_4bit=True, device="cpu", dtype="float32",
                          lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    if generate_first:
        model.eval()
        with torch.no_grad():
            model(input_ids=ids[:1])
    if restore:
        restore_training_layout(model)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_training_after_generation_gets_the_same_gradients(tmp_path):
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    fresh = _lora_grads(str(tmp_path), generate_first=False, restore=False)
    after = _lora_grads(str(tmp_path), generate_first=True, restore=True)
    assert fresh.keys() == after.keys()
    # The repacking rounds the block scales to bf16 and undoing it keeps that rounding, so
    # the gradients agree to within 2 % of each tensor's largest entry (lost: 100 %).
    for name, grad in fresh.items():
        gap = float((after[name] - grad).abs().max())
        assert gap <= 0.02 * float(grad.abs().max()) + 1e-9, (name, gap)
    # The lowest layer's lora_B learns (it gets a gradient through the 4-bit layers above).
    assert any(g.abs().sum() > 0 for n, g in after.items() if "layers.0." in n
               and "lora_B" in n)


def test_restore_is_a_no_op_on_a_model_that_did_not_generate(tmp_path):
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), load_in_4bit=True, device="cpu", dtype="float32")
    assert restore_training_layout(model) == 0


def test_every_training_batch_starts_from_the_training_layout(tmp_path):
    from ucoder.sft import UCoderModule

    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    module = UCoderModule(str(tmp_path), load_in_4bit=True, dtype="float32", adapter_dir="",
                          lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    module.configure_model()
    module.model.eval()
    with torch.no_grad():
        module.model(input_ids=torch.tensor([[5, 6, 7]]))
    module.on_train_batch_start(None, 0)
    assert restore_training_layout(module.model) == 0  # nothing left to restore
