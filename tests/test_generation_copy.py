"""merged_generation_copy: a plain fp32 copy of a 4-bit + LoRA model for generation."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.models import FourBitOptions, LoraOptions, load_model, merged_generation_copy

IDS = torch.tensor([[1, 40, 41, 42, 43, 60, 61, 62], [1, 70, 71, 72, 73, 74, 75, 76]])


def _nudge_lora(model) -> None:
    """LoRA's B starts at zero; give it weights so the adapter changes the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _qlora(path, bf16_kernel: bool, compute: str = "float32"):
    import bitsandbytes as bnb

    model, _ = load_model(str(path), load_in_4bit=True, device="cpu",
                          quant=FourBitOptions(compute_dtype=compute),
                          lora=LoraOptions(r=4, alpha=8, dropout=0.0))
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit) and not bf16_kernel:
            # Keep bitsandbytes on its fp32 path (de-quantize, then matmul) so the
            # reference has no bf16 rounding on CPUs with AVX512-BF16.
            m.support_avx512bf16_for_cpu = False
    _nudge_lora(model)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    path = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qlora(tiny_dir):
    return _qlora(tiny_dir, bf16_kernel=False)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in [*model.named_parameters(),
                                               *model.named_buffers()]}


def test_copy_logits_match_the_4bit_lora_model(qlora):
    import bitsandbytes as bnb

    copy = merged_generation_copy(qlora)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in copy.modules())
    assert not hasattr(copy, "peft_config") and not copy.training
    with torch.no_grad():
        ours, theirs = copy(input_ids=IDS).logits, qlora(input_ids=IDS).logits
        without = qlora.get_base_model()
        with qlora.disable_adapter():
            base_only = without(input_ids=IDS).logits
    # Same weights, merged vs computed on the side: fp32 rounding only.
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    # ... and the LoRA is really in it (the nudged adapter moves the logits).
    assert (ours - base_only).abs().max() > 1e-2


def test_training_model_is_left_4bit_and_unchanged(qlora):
    import bitsandbytes as bnb

    before = _snapshot(qlora)
    copy = merged_generation_copy(qlora)
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(1.0)  # the copy shares no storage with the training model
    after = _snapshot(qlora)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in qlora.modules())
    assert not any(getattr(m, "merged", False) for m in qlora.modules())


def test_copy_after_bitsandbytes_repacked_for_its_bf16_kernel(tiny_dir):
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("bitsandbytes repacks 4-bit weights only on AVX512-BF16 CPUs")
    model = _qlora(tiny_dir, bf16_kernel=True)
    with torch.no_grad():
        theirs = model(input_ids=IDS).logits  # an eval forward repacks the weights
    packed = _snapshot(model)
    ours = merged_generation_copy(model)(input_ids=IDS).logits
    # The 4-bit model now multiplies in bf16; the copy in fp32 from the same 4-bit values.
    assert torch.allclose(ours, theirs, atol=2e-2), (ours - theirs).abs().max()
    after = _snapshot(model)
    assert all(torch.equal(packed[n], after[n]) for n in packed)
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, theirs)


def test_copy_computes_in_the_4bit_compute_dtype_by_default(tiny_dir):
    model = _qlora(tiny_dir, bf16_kernel=False, compute="bfloat16")
    copy = merged_generation_copy(model)
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert merged_generation_copy(model, torch.float32).dtype == torch.float32
    with torch.no_grad():
        ours, theirs = copy(input_ids=IDS).logits.float(), model(input_ids=IDS).logits.float()
    # bf16 matmuls in both, but the copy also keeps norms and the output layer in bf16.
    assert torch.allclose(ours, theirs, atol=5e-2), (ours - theirs).abs().max()


def test_plain_model_copy_is_equal_and_separate():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    copy = merged_generation_copy(model)
    with torch.no_grad():
        assert torch.equal(copy(input_ids=IDS).logits, model(input_ids=IDS).logits)
    ours = {p.data_ptr() for p in copy.parameters()}
    assert not ours & {p.data_ptr() for p in model.parameters()}
