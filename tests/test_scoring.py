"""Sampler.score: summed log-probs of given continuations equal a manual forward pass."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer
from ucoder.generation import Sampler

PROMPTS = ["def add(a, b):", "x = [1, 2, 3]\nfor v in x:", "Score:"]
CONTS = [[" return a + b", "\n    pass", ""], [" 7", "\n    print(v)"],
         [" 1", " 5", " 10", "7"]]


def manual_score(model, prompt_ids, cont_ids):
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    start = len(prompt_ids)
    return sum(float(logp[start - 1 + k, t]) for k, t in enumerate(cont_ids))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_score_equals_a_manual_forward_pass(family, batch_size):
    tok = tiny_tokenizer(add_bos=family == "llama")
    model = tiny_llama(tok, hidden_size=64) if family == "llama" else tiny_gpt2(tok)
    sampler = Sampler(model, tok, chat=False, show_progress=False, batch_size=batch_size)
    scores = sampler.score(PROMPTS, CONTS)
    assert [len(s) for s in scores] == [len(c) for c in CONTS]
    for prompt, conts, got in zip(PROMPTS, CONTS, scores):
        for cont, value in zip(conts, got):
            cont_ids = tok(cont, add_special_tokens=False)["input_ids"]
            expected = manual_score(model, sampler.encode_prompt(prompt), cont_ids)
            assert value == pytest.approx(expected, abs=1e-4), (prompt, cont)
    assert scores[0][2] == 0.0  # an empty continuation has log-prob 0


def test_score_conditions_on_the_same_text_as_sample():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    sampler = Sampler(model, tok, chat=True, show_progress=False)
    (sample,), = sampler.sample(["Write add."], 1, max_new_tokens=6, temperature=1.0,
                                prefix="```python\n", seed=3)
    text = tok.decode(sample.token_ids)
    (got,), = sampler.score(["Write add."], [[text]], prefix="```python\n")
    ids = sampler.encode_prompt(sampler.format_prompt("Write add.", "```python\n"))
    assert sample.prompt_text == sampler.format_prompt("Write add.", "```python\n")
    assert got == pytest.approx(manual_score(model, ids, tok(text, add_special_tokens=False)
                                             ["input_ids"]), abs=1e-4)
    assert got < 0


def test_score_keeps_the_training_mode_and_checks_lengths():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    model.train()
    sampler = Sampler(model, tok, chat=False, show_progress=False)
    sampler.score(["a"], [[" b"]])
    assert model.training
    with pytest.raises(ValueError, match="continuations"):
        sampler.score(["a", "b"], [[" c"]])
