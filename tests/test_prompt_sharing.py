"""Shared-prompt attention: the same softmax as SDPA over prompt + own tokens, and the
Sampler sampling the same tokens with it as without it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.tiny import (
    assert_same_samples,
    record_while_decoding,
    tiny_family,
    tiny_llama,
    tiny_tokenizer,
)
from ucoder.decoding import common_prefix_length
from ucoder.generation import MIN_COMMON_PREFIX, Sampler
from ucoder.prompt_sharing import (
    ATTENTION,
    SharedPromptCache,
    _scores,
    shared_prompt_attention,
)

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "class Stack:\n    def push(self, v):",
           "import os"]
# Prompts after a long common head, as a chat template's system turn or a stage's
# instructions: prefilled once for all prompts.
HEAD = "# Solve the task below in Python, with a docstring and no prints.\n"
STOP = ["e", "a"]  # frequent, so rows end at different steps and the batch is refilled


def _cache_with(prompt_k, prompt_v, prompt_mask, owner, own_k, own_v):
    tok = tiny_tokenizer()
    cache = SharedPromptCache(tiny_llama(tok, num_layers=1), capacity=8)
    layer = cache.layers[0]
    layer.update(prompt_k, prompt_v)  # the prefill
    cache.fan_out(owner, prompt_mask)
    layer.update(own_k, own_v)
    return cache


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_equals_sdpa_over_each_rows_prompt_and_own_tokens(dtype):
    g = torch.Generator().manual_seed(0)
    prompts, kv_heads, group, width, own, dim = 3, 2, 3, 7, 4, 16
    owner = torch.tensor([2, 0, 0, 2, 1, 0])  # uneven: 3, 1 and 2 rows per prompt
    rows = len(owner)
    prompt_k, prompt_v = (torch.randn(prompts, kv_heads, width, dim, generator=g) for _ in "kv")
    own_k, own_v = (torch.randn(rows, kv_heads, own, dim, generator=g) for _ in "kv")
    prompt_mask = torch.ones(prompts, width, dtype=torch.bool)
    prompt_mask[0, :3] = prompt_mask[2, :1] = False  # left padding
    own_mask = torch.ones(rows, own, dtype=torch.bool)
    own_mask[4, :2] = False  # a row that joined later
    query = torch.randn(rows, kv_heads * group, 1, dim, generator=g)
    prompt_k, prompt_v, own_k, own_v, query = (x.to(dtype) for x in (prompt_k, prompt_v, own_k,
                                                                     own_v, query))
    cache = _cache_with(prompt_k, prompt_v, prompt_mask, owner, own_k, own_v)
    out, _ = shared_prompt_attention(SimpleNamespace(layer_idx=0), query, own_k, own_v,
                                     own_mask[:, None, None, :], scaling=dim ** -0.5,
                                     shared_prompts=cache)
    keys = torch.cat([prompt_k[owner], own_k], dim=2).repeat_interleave(group, dim=1)
    values = torch.cat([prompt_v[owner], own_v], dim=2).repeat_interleave(group, dim=1)
    mask = torch.cat([prompt_mask[owner], own_mask], dim=1)[:, None, None, :]
    expected = F.scaled_dot_product_attention(query.float(), keys.float(), values.float(),
                                              attn_mask=mask).to(dtype)
    assert out.shape == (rows, 1, kv_heads * group, dim) and out.dtype == dtype
    tolerance = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out, expected.transpose(1, 2), **tolerance)


def test_bfloat16_scores_from_a_strided_key_equal_the_direct_product():
    g = torch.Generator().manual_seed(0)
    buffer = torch.randn(5, 3, 40, 16, generator=g).to(torch.bfloat16)
    key = buffer[:, :, :23]  # the filled part of a preallocated buffer
    q = torch.randn(5, 3, 2, 16, generator=g).to(torch.bfloat16)
    scores = _scores(q, key)
    assert scores.is_contiguous() and scores.shape == (5, 3, 2, 23)
    expected = torch.matmul(q.float(), key.float().transpose(-1, -2)).to(torch.bfloat16)
    torch.testing.assert_close(scores, expected, atol=0, rtol=8e-3)  # bf16 rounding


def test_rows_moved_and_prompts_joined_keep_their_owners():
    g = torch.Generator().manual_seed(1)
    a = _cache_with(*(torch.randn(2, 1, 3, 4, generator=g) for _ in "kv"),
                    torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 0, 1, 1]),
                    *(torch.randn(4, 1, 1, 4, generator=g) for _ in "kv"))
    a.move_rows(holes=[0, 1], movers=[3, 2], rows=2)  # rows 0 and 1 ended
    assert a.owner.tolist() == [1, 1]
    b = _cache_with(*(torch.randn(1, 1, 5, 4, generator=g) for _ in "kv"),
                    torch.ones(1, 5, dtype=torch.bool), torch.tensor([0, 0]),
                    *(torch.randn(2, 1, 1, 4, generator=g) for _ in "kv"))
    kept = a.layers[0].prompt_k[1].clone()
    a.join(b)
    assert a.owner.tolist() == [0, 0, 1, 1]  # prompt 0 of `a` had no rows left: dropped
    assert a.prompt_mask.shape == (2, 5) and a.prompt_mask[0].tolist() == [False] * 2 + [True] * 3
    assert torch.equal(a.layers[0].prompt_k[0, :, 2:], kept)
    assert torch.equal(a.layers[0].prompt_k[1], b.layers[0].prompt_k[0])


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request):
    return tiny_family(request.param)


@pytest.mark.parametrize("head", ["", HEAD], ids=["own-prompts", "common-head"])
@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=1.0, seed=3),
                                dict(temperature=0.8, top_p=0.9, top_k=20, seed=5)])
def test_sampler_samples_the_same_tokens_with_and_without_shared_prompts(family, kw, head):
    model, tok = family
    prompts = [head + p for p in PROMPTS]
    if head:
        assert common_prefix_length([tok(p)["input_ids"] for p in prompts]) >= MIN_COMMON_PREFIX
    runs = {}
    for share in (False, True):
        sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=5,
                          share_prompts=share)
        runs[share] = sampler.sample(prompts, 3, max_new_tokens=20, stop=STOP, **kw)
    assert_same_samples(runs[False], runs[True], logprob_abs=1e-4)
    assert model.config._attn_implementation == "sdpa"  # switched back after sampling


def _attention_while_sampling(monkeypatch, fail: bool = False, **options) -> str:
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    sampler = Sampler(model, tok, chat=False, show_progress=False, **options)
    seen = record_while_decoding(monkeypatch, sampler,
                                 lambda: model.config._attn_implementation, fail)
    try:
        sampler.sample(PROMPTS, 2, max_new_tokens=4)
    finally:
        assert model.config._attn_implementation == "sdpa"  # switched back, even on failure
    return seen[0]


def test_prompts_are_shared_by_default_on_a_cpu_and_not_when_asked(monkeypatch):
    assert _attention_while_sampling(monkeypatch) == ATTENTION
    assert _attention_while_sampling(monkeypatch, share_prompts=False) == "sdpa"
    assert _attention_while_sampling(monkeypatch, decode="fast") == "sdpa"


def test_attention_is_switched_back_when_sampling_fails(monkeypatch):
    with pytest.raises(RuntimeError, match="boom"):
        _attention_while_sampling(monkeypatch, fail=True)


def test_bad_share_prompts_value_is_named():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="share_prompts='yes'"):
        Sampler(tiny_llama(tok), tok, share_prompts="yes")


def test_common_prefix_leaves_every_prompt_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2], [3, 4]]) == 0
    assert common_prefix_length([[7, 8, 9], [7, 8, 9]]) == 2
