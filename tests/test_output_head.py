"""The output layer in vocabulary chunks into a reused buffer: the same logits (to float
rounding; bit for bit on this CPU), the same samples, and only where it is safe."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from tests.tiny import (
    assert_same_samples,
    record_while_decoding,
    tiny_family,
    tiny_llama,
    tiny_tokenizer,
)
from ucoder import output_head
from ucoder.generation import Sampler
from ucoder.output_head import ChunkedHead, chunkable, chunked_head

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "class Stack:", "import os"]
STOP = ["e", "a"]  # frequent, so rows end at different steps and the batch is refilled


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(48, 1000, 128), (576, 49152, None)],
                         ids=["tiny", "embedded-model"])  # 1000: 7 chunks and a short one
def test_chunked_logits_equal_the_layer(bias, size):
    hidden_size, vocab, chunk = size
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=bias)
    chunked = ChunkedHead(head, chunk=chunk)
    for rows in (5, 9, 3):  # grows, then a smaller step inside the same buffer
        hidden = torch.randn(rows, 1, hidden_size)
        with torch.no_grad():
            with chunked.reusing():
                logits = chunked(hidden)
            expected = head(hidden)
        assert logits.shape == (rows, 1, vocab)
        # Bit for bit on this CPU; another BLAS kernel may round the last bit otherwise.
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_a_bfloat16_layer_gives_its_logits_widened_to_float32(bias):
    torch.manual_seed(0)
    head = torch.nn.Linear(48, 1000, bias=bias).to(torch.bfloat16)
    chunked = ChunkedHead(head)
    assert chunked.chunk == 1000  # the whole vocabulary in one bf16 product
    for rows in (5, 9, 3):
        hidden = torch.randn(rows, 1, 48, dtype=torch.bfloat16)
        with torch.no_grad():
            with chunked.reusing():
                logits = chunked(hidden)
            expected = head(hidden).float()  # what the Sampler's widening gives
        assert logits.dtype == torch.float32 and logits.shape == (rows, 1, 1000)
        torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_only_decoding_steps_share_the_buffer():
    head = torch.nn.Linear(16, 100, bias=False)
    chunked, hidden = ChunkedHead(head, chunk=64), torch.randn(4, 1, 16)
    with torch.no_grad():
        with chunked.reusing():
            first = chunked(hidden)
            second = chunked(hidden)
        other = chunked(hidden)
    assert first.data_ptr() == second.data_ptr()  # one buffer for the whole call
    assert other.data_ptr() != second.data_ptr()
    assert torch.equal(other, second)  # other calls (a prefill) get fresh logits, so a
    # live step's logits stay intact


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request):
    return tiny_family(request.param)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("decode", ["continuous", "fast"])
@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=0.8, top_p=0.9, seed=5)])
def test_sampler_samples_exactly_the_same_with_and_without_it(family, decode, kw, dtype,
                                                              monkeypatch):
    model, tok = family
    model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    monkeypatch.setattr(output_head, "CHUNK", 64)  # several chunks of the tiny vocabulary
    runs = {}
    for chunk in (True, False):
        if not chunk:
            monkeypatch.setattr("ucoder.generation.chunked_head", _not_chunked)
        sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=5,
                          decode=decode)
        runs[chunk] = sampler.sample(PROMPTS, 3, max_new_tokens=20, stop=STOP, **kw)
    assert_same_samples(runs[True], runs[False], logprob_abs=1e-5)
    assert "forward" not in vars(model.get_output_embeddings())  # removed afterwards


def _not_chunked(model):
    return contextlib.nullcontext()


def _head_while_sampling(monkeypatch, fail: bool = False, **options):
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    sampler = Sampler(model, tok, chat=False, show_progress=False, **options)
    seen = record_while_decoding(monkeypatch, sampler, lambda: sampler._head, fail)
    try:
        sampler.sample(PROMPTS, 2, max_new_tokens=4)
    finally:
        assert "forward" not in vars(model.lm_head)  # removed, even on failure
    return seen[0]


def test_installed_while_decoding_except_for_the_reference_path(monkeypatch):
    for decode in ("continuous", "fast"):
        head = _head_while_sampling(monkeypatch, decode=decode)
        assert isinstance(head, ChunkedHead) and head._buffer is not None  # steps wrote it
    assert _head_while_sampling(monkeypatch, decode="reference") is None
    with pytest.raises(RuntimeError, match="boom"):
        _head_while_sampling(monkeypatch, fail=True)


def test_layers_it_cannot_stand_in_for_are_left_alone():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    assert chunkable(model) is model.lm_head
    assert chunkable(tiny_llama(tok).to(torch.bfloat16)) is not None
    assert chunkable(tiny_llama(tok).to(torch.float16)) is None  # measured in fp32 and bf16 only
    hooked = tiny_llama(tok)
    hooked.lm_head.register_forward_hook(lambda *a: None)
    assert chunkable(hooked) is None  # a hook would be skipped
    with chunked_head(hooked) as head:
        assert head is None and "forward" not in vars(hooked.lm_head)


def test_a_lora_output_layer_is_left_alone():
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    model = get_peft_model(tiny_llama(tok), LoraConfig(r=2, target_modules=["lm_head"]))
    with chunked_head(model) as head:
        assert head is None
    plain = get_peft_model(tiny_llama(tok), LoraConfig(r=2, target_modules=["q_proj"]))
    with chunked_head(plain) as head:
        assert isinstance(head, ChunkedHead)  # the base model's plain output layer
