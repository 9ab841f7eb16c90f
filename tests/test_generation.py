"""The Sampler: log-probs, grouping, stop strings, seeds, batching, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.generation import Sampler

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "class Stack:\n    def push(self, v):"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok, hidden_size=64)


def plain(model, tok, **kw):
    return Sampler(model, tok, chat=False, show_progress=False, **kw)


def manual_logprobs(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    start = len(prompt_ids)
    return [float(logp[start - 1 + k, t]) for k, t in enumerate(completion_ids)]


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_logprobs_equal_a_manual_forward_pass(model, tok, decode):
    sampler = plain(model, tok, batch_size=4, decode=decode)  # prompts of varied lengths
    groups = sampler.sample(PROMPTS, 3, max_new_tokens=12, temperature=1.0, seed=1)
    for prompt, group in zip(PROMPTS, groups):
        for s in group:
            expected = manual_logprobs(model, sampler.encode_prompt(prompt), s.token_ids)
            assert s.num_tokens == len(s.token_ids) == len(expected)
            assert s.sum_logprob == pytest.approx(sum(expected), abs=1e-3)
            if s.num_tokens:
                assert s.mean_logprob == pytest.approx(s.sum_logprob / s.num_tokens)


@pytest.mark.parametrize("decode", ["fast", "reference"])
def test_greedy_matches_generate_one_prompt_at_a_time(model, tok, decode):
    sampler = plain(model, tok, batch_size=8, decode=decode)
    groups = sampler.sample(PROMPTS, 1, max_new_tokens=10, temperature=0)
    for prompt, (s,) in zip(PROMPTS, groups):
        ids = torch.tensor([sampler.encode_prompt(prompt)])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=10, pad_token_id=tok.pad_token_id)
        reference = out[0, ids.shape[1]:].tolist()
        if reference and reference[-1] == tok.eos_token_id:
            reference = reference[:-1]  # the Sampler drops the EOS token from the sample
        assert s.token_ids == reference


def test_results_are_grouped_per_prompt_in_order(model, tok):
    sampler = plain(model, tok, batch_size=5)  # 12 rows in batches that split groups
    groups = sampler.sample(PROMPTS, 4, max_new_tokens=4, seed=0)
    assert [len(g) for g in groups] == [4, 4, 4]
    for i, group in enumerate(groups):
        assert [s.prompt_index for s in group] == [i] * 4
        assert [s.sample_index for s in group] == [0, 1, 2, 3]
        assert all(s.prompt_text == PROMPTS[i] for s in group)
        assert all(s.finish_reason in {"eos", "stop", "length"} for s in group)


def test_same_seed_same_samples_other_seed_other_samples(model, tok):
    sampler = plain(model, tok)
    first = sampler.sample(PROMPTS, 2, max_new_tokens=8, temperature=1.0, seed=7)
    again = sampler.sample(PROMPTS, 2, max_new_tokens=8, temperature=1.0, seed=7)
    other = sampler.sample(PROMPTS, 2, max_new_tokens=8, temperature=1.0, seed=8)
    ids = [[s.token_ids for s in g] for g in first]
    assert ids == [[s.token_ids for s in g] for g in again]
    assert ids != [[s.token_ids for s in g] for g in other]


def test_batch_size_does_not_change_greedy_output(model, tok):
    one = plain(model, tok, batch_size=1).sample(PROMPTS, 2, max_new_tokens=8, temperature=0)
    many = plain(model, tok, batch_size=6).sample(PROMPTS, 2, max_new_tokens=8, temperature=0)
    assert [[s.token_ids for s in g] for g in one] == [[s.token_ids for s in g] for g in many]


def test_stop_string_cuts_the_text_and_ends_the_sample(model, tok):
    sampler = plain(model, tok)
    (full,), = sampler.sample([PROMPTS[0]], 1, max_new_tokens=40, temperature=0)
    text = full.text
    if len(text) < 12:
        pytest.skip("the random model ended too early to pick a stop string")
    stop = text[6:9]
    (cut,), = sampler.sample([PROMPTS[0]], 1, max_new_tokens=40, temperature=0, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == text[:text.find(stop)]
    assert cut.num_tokens < full.num_tokens


def test_chat_prompts_use_the_template_and_prefix(model, tok):
    sampler = Sampler(model, tok, chat=True, system_prompt="Be brief.", show_progress=False)
    (s,), = sampler.sample(["Write add."], 1, max_new_tokens=3, prefix="```python\n")
    assert s.prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert s.prompt_text.endswith("<|im_start|>assistant\n```python\n")


@pytest.mark.parametrize("option, value", [("temperature", -1.0), ("top_p", 0.0),
                                           ("max_new_tokens", 0), ("top_k", -2)])
def test_bad_sampling_options_are_named(model, tok, option, value):
    with pytest.raises(ValueError, match=option):
        plain(model, tok).sample(PROMPTS, 1, **{option: value})


def test_generate_cli_prints_one_json_object_per_sample(model, tok, tmp_path, capsys):
    from ucoder.cli import main

    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rc = main(["generate", "--model", str(tmp_path), "--prompt", "def f(x):", "--prompt", "x =",
               "-n", "2", "--max-new-tokens", "5", "--plain", "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["prompt_index"], o["sample_index"]) for o in lines] == [(0, 0), (0, 1), (1, 0),
                                                                       (1, 1)]
    for o in lines:
        assert isinstance(o["text"], str) and 0 <= o["num_tokens"] <= 5
        assert isinstance(o["mean_logprob"], float)


@pytest.mark.integration
def test_embedded_model_writes_code():
    from ucoder.models import load_model

    model, tok = load_model()
    sampler = Sampler(model, tok, show_progress=False)
    (s,), = sampler.sample(["Write a Python function `add(a, b)` that returns a + b."], 1,
                           max_new_tokens=48, temperature=0, prefix="```python\n", stop=["```"])
    assert "def add" in s.text
    assert s.mean_logprob < 0 and sampler.last_stats["tokens_per_s"] > 0
