"""The Sampler's fast decoding path: same samples as the reference path, and its KV cache."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer
from ucoder.decoding import PreallocatedLayer, preallocated_cache
from ucoder.generation import Sampler

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "class Stack:\n    def push(self, v):"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request):
    if request.param == "llama":
        tok = tiny_tokenizer()
        return tiny_llama(tok, hidden_size=64), tok
    tok = tiny_tokenizer(add_bos=False)
    return tiny_gpt2(tok, hidden_size=64), tok


def _run(model, tok, decode, **kw):
    sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=5, decode=decode)
    return sampler.sample(PROMPTS, 3, max_new_tokens=20, **kw)


@pytest.mark.parametrize("kw", [dict(temperature=1.0, seed=3), dict(temperature=0),
                                dict(temperature=0.8, top_p=0.9, top_k=20, seed=5)])
def test_fast_path_samples_what_the_reference_path_samples(family, kw):
    model, tok = family
    fast, ref = _run(model, tok, "fast", **kw), _run(model, tok, "reference", **kw)
    for g_fast, g_ref in zip(fast, ref):
        for a, b in zip(g_fast, g_ref):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-4)


def test_unknown_decode_path_is_named():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="decode='turbo'"):
        Sampler(tiny_llama(tok), tok, decode="turbo")


def test_preallocated_layer_grows_past_its_capacity_and_selects_rows():
    layer = PreallocatedLayer(capacity=3)
    k = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).reshape(2, 1, 2, 4)
    layer.update(k, -k)
    keys, values = layer.update(k + 100, -(k + 100))  # 4 positions > capacity 3
    assert keys.shape == (2, 1, 4, 4) and layer.get_seq_length() == 4
    assert torch.equal(keys, torch.cat([k, k + 100], dim=-2))
    assert torch.equal(values, -keys)
    layer.batch_select_indices(torch.tensor([1, 1, 0]))
    assert torch.equal(layer.keys[0], keys[1]) and torch.equal(layer.keys[2], keys[0])
    assert torch.equal(layer.values, -layer.keys)


def test_preallocated_cache_gives_the_same_logits_as_a_forward_pass():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    ids = torch.tensor([tok("def add(a, b):\n    return a + b").input_ids])
    cache = preallocated_cache(model, capacity=ids.shape[1])
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    with torch.no_grad():
        full = model(ids).logits[0]
        first = model(ids[:, :5], past_key_values=cache, use_cache=True).logits[0]
        steps = [model(ids[:, i:i + 1], past_key_values=cache, use_cache=True).logits[0, -1]
                 for i in range(5, ids.shape[1])]
    got = torch.cat([first, torch.stack(steps)])
    assert torch.allclose(got, full, atol=1e-5), (got - full).abs().max()


def _manual_logprobs(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return [float(logp[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(completion_ids)]


def test_bfloat16_copy_stays_within_its_tolerance_and_leaves_the_model_alone():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sampler = Sampler(model, tok, chat=False, show_progress=False, dtype="bfloat16")
    groups = sampler.sample(PROMPTS, 2, max_new_tokens=16, temperature=1.0, seed=2)
    diffs = []
    for prompt, group in zip(PROMPTS, groups):
        for s in group:
            exact = _manual_logprobs(model, sampler.encode_prompt(prompt), s.token_ids)
            diffs.append(abs(s.sum_logprob - sum(exact)) / max(s.num_tokens, 1))
    # bf16 keeps 8 mantissa bits: per-token log-probs move (~1e-2 on the 135M model).
    assert 0 < max(diffs) < 0.02, diffs  # > 0: the bf16 copy did the sampling
    assert sampler._generator_model is model  # the copy is dropped after the call
    assert all(p.dtype == torch.float32 and torch.equal(p, before[n])
               for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="dtype='int3'"):
        Sampler(model, tok, dtype="int3")
