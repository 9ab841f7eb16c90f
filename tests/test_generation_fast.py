"""The Sampler's fast decoding path: same samples as the reference path, and its KV cache."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import assert_same_samples, tiny_family, tiny_llama, tiny_tokenizer
from ucoder.decoding import (
    PreallocatedLayer,
    drop_rows,
    kv_bytes_per_token,
    last_logits_only,
    logsumexp_,
    preallocated_cache,
)
from ucoder.generation import Sampler

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "class Stack:\n    def push(self, v):"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request):
    return tiny_family(request.param)


def _run(model, tok, decode, **kw):
    sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=5, decode=decode)
    return sampler.sample(PROMPTS, 3, max_new_tokens=20, **kw)


@pytest.mark.parametrize("kw", [dict(temperature=1.0, seed=3), dict(temperature=0),
                                dict(temperature=0.8, top_p=0.9, top_k=20, seed=5)])
def test_fast_path_samples_what_the_reference_path_samples(family, kw):
    model, tok = family
    fast, ref = _run(model, tok, "fast", **kw), _run(model, tok, "reference", **kw)
    assert_same_samples(fast, ref, logprob_abs=1e-4)


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


def test_drop_rows_fills_the_freed_slots_from_the_tail_and_reports_the_order():
    cache = preallocated_cache(tiny_llama(tiny_tokenizer()), capacity=8)
    rows = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).expand(6, 2, 3, 4)
    for layer in cache.layers:
        layer.update(rows.clone(), -rows)
    order = drop_rows(cache, keep=[0, 2, 4, 5], total=6, device="cpu")
    assert order == [0, 4, 2, 5]  # slots 1 and 3 are freed and take rows 4 and 5
    for layer in cache.layers:
        assert layer.keys.shape == (4, 2, 3, 4)
        assert layer.keys[:, 0, 0, 0].tolist() == [float(i) for i in order]
        assert torch.equal(layer.values, -layer.keys)
        layer.update(rows[:4, :, :1] + 10, -(rows[:4, :, :1] + 10))  # the buffer still grows
        assert layer.keys.shape == (4, 2, 4, 4)


def test_preallocated_cache_gives_the_same_logits_as_a_forward_pass():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    ids = torch.tensor([tok("def add(a, b):\n    return a + b").input_ids])
    cache = preallocated_cache(model, capacity=ids.shape[1])
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    with torch.no_grad():
        full = model(ids).logits[0]
        first = model(ids[:, :5], cache=cache, use_cache=True).logits[0]
        steps = [model(ids[:, i:i + 1], cache=cache, use_cache=True).logits[0, -1]
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


def _logprob_error(model, sampler, prompts, groups) -> float:
    """Largest gap between a sample's summed log-prob and a plain forward pass over it."""
    worst = 0.0
    for prompt, group in zip(prompts, groups):
        ids = sampler.encode_prompt(prompt)
        for s in group:
            full = torch.tensor([ids + s.token_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(full).logits[0].float(), -1)
            manual = sum(float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(s.token_ids))
            worst = max(worst, abs(manual - s.sum_logprob))
    return worst


@pytest.mark.parametrize("stop", [["e"], [" ", "a"]])
def test_continuous_refills_keep_every_row_on_its_own_prompt(family, stop):
    """Rows stop at many lengths, so finished rows are replaced mid-decode (batch 4 of
    12 rows): each sample's log-probs must still be those of its own prompt + tokens."""
    model, tok = family
    sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=4)
    assert sampler.decode == "continuous" and sampler._joinable()
    groups = sampler.sample(PROMPTS, 4, max_new_tokens=16, temperature=1.0, seed=3, stop=stop)
    lengths = {s.num_tokens for g in groups for s in g}
    assert len(lengths) > 3  # rows did finish at different steps
    assert _logprob_error(model, sampler, PROMPTS, groups) < 1e-4
    again = sampler.sample(PROMPTS, 4, max_new_tokens=16, temperature=1.0, seed=3, stop=stop)
    assert [[s.token_ids for s in g] for g in again] == [[s.token_ids for s in g]
                                                         for g in groups]


def test_continuous_without_refills_is_the_batched_path_exactly(family):
    model, tok = family
    kw = dict(temperature=1.0, seed=4, stop=["e"])
    one = Sampler(model, tok, chat=False, show_progress=False, batch_size=64).sample(
        PROMPTS, 3, max_new_tokens=12, **kw)
    ref = Sampler(model, tok, chat=False, show_progress=False, batch_size=64,
                  decode="fast").sample(PROMPTS, 3, max_new_tokens=12, **kw)
    assert [[s.token_ids for s in g] for g in one] == [[s.token_ids for s in g] for g in ref]


def test_join_right_aligns_rows_and_drops_columns_no_row_reads():
    from ucoder.continuous import join

    def cache_of(rows, cols, fill):
        cache = preallocated_cache(tiny_llama(tiny_tokenizer(), hidden_size=64), cols)
        for layer in cache.layers:
            k = torch.full((rows, 1, cols, 2), float(fill))
            layer.update(k, -k)
        return cache

    a, b = cache_of(2, 5, 1.0), cache_of(1, 3, 2.0)
    mask_a = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    mask_b = torch.tensor([[1, 1, 1]])
    mask = join(a, mask_a, b, mask_b, spare=4)
    assert mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]]  # column 0 dropped
    layer = a.layers[0]
    assert layer.keys.shape == (3, 1, 4, 2) and layer.get_seq_length() == 4
    assert layer._k.shape[-2] == 8  # room for 4 more steps
    assert layer.keys[2, 0, :, 0].tolist() == [0.0, 2.0, 2.0, 2.0]  # zeros where padded
    assert torch.equal(layer.values, -layer.keys)


def test_kv_cache_budget_caps_the_rows_decoded_at_once(family):
    model, tok = family
    sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=64,
                      decode="fast")
    longest = max(len(sampler.encode_prompt(p)) for p in PROMPTS)
    per_row = kv_bytes_per_token(model) * (longest + 20)
    cfg = model.config
    assert kv_bytes_per_token(model) == 2 * cfg.num_hidden_layers * 4 * (
        getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads) * (
        cfg.hidden_size // cfg.num_attention_heads)
    sampler.kv_cache_gib = 4.5 * per_row / 2**30  # room for 4 rows, not 5
    capped = sampler.sample(PROMPTS, 3, max_new_tokens=20, temperature=1.0, seed=3)
    assert sampler.last_stats["rows_at_once"] == 4
    ref = Sampler(model, tok, chat=False, show_progress=False, batch_size=4,
                  decode="reference").sample(PROMPTS, 3, max_new_tokens=20, temperature=1.0,
                                             seed=3)
    assert [[s.token_ids for s in g] for g in capped] == [[s.token_ids for s in g] for g in ref]


def test_a_bad_kv_cache_budget_is_named():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="kv_cache_gib=0"):
        Sampler(tiny_llama(tok), tok, kv_cache_gib=0)


def test_in_place_logsumexp_equals_torchs_bit_for_bit():
    x = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0)) * 4
    x[1, :10] = float("-inf")
    x[2] = float("-inf")  # a row with no finite logit stays -inf, as in torch
    expected = x.logsumexp(dim=-1)
    assert torch.equal(logsumexp_(x.clone()), expected)


@pytest.mark.parametrize("decode", ["reference", "fast", "continuous"])
def test_the_output_layer_gets_contiguous_rows_in_every_forward(family, decode):
    """``logits_to_keep=1`` would hand the output layer a strided view of the last
    position, which torch multiplies through a copy of the layer's weight per prompt."""
    model, tok = family
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        _run(model, tok, decode, seed=0)
    finally:
        hook.remove()
    assert any(shape[0] > 1 for shape, _ in seen)  # prefills of several prompts ran
    assert all(contiguous for _, contiguous in seen), seen


def test_last_logits_only_keeps_the_same_logits(family):
    model, _ = family
    ids = torch.randint(5, 100, (3, 7))
    with torch.no_grad():
        by_count = model(input_ids=ids, logits_to_keep=1).logits
        by_index = model(input_ids=ids, logits_to_keep=last_logits_only(ids)).logits
    assert by_index.shape == by_count.shape == (3, 1, model.config.vocab_size)
    torch.testing.assert_close(by_index, by_count, rtol=0, atol=0)
    assert last_logits_only(ids[:, :1]) == 1  # a decoding step is contiguous already
