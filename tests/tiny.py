"""Tiny, offline stand-ins for a real tokenizer and causal LMs, for fast tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in a few milliseconds on
a handful of Python snippets, and the models are randomly initialised from a config
(hidden size 32, 2 layers by default). Every factory is deterministic for a given seed.

    tok = tiny_tokenizer()
    model = tiny_llama(tok)          # or tiny_gpt2(tok)
    ids = tok("def f(x): return x", return_tensors="pt").input_ids
    logits = model(ids).logits

The tokenizer encodes any text (byte-level), has ``bos``/``eos``/``pad`` tokens, a
ChatML-style chat template, and prepends BOS like Llama tokenizers do (``add_bos=False``
turns that off, like GPT-2's).
"""

from __future__ import annotations

import functools

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    'def is_even(n: int) -> bool:\n    """Return True if n is even."""\n'
    "    return n % 2 == 0\n",
    "def reverse(s):\n    return s[::-1]\n\nassert reverse('abc') == 'cba'\n",
    "for i in range(10):\n    if i > 3:\n        print(i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "import math\nx = [math.sqrt(v) for v in (1, 4, 9)]\n",
    "Write a function that returns the sum of a list of numbers.\n",
    "while True:\n    break\nelse:\n    pass\n# comment: None, False, True\n",
]


@functools.lru_cache(maxsize=8)
def _trained_bpe(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok.to_str()  # cached as JSON so every caller gets its own mutable copy


def tiny_tokenizer(
    vocab_size: int = 384, *, add_bos: bool = True, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few code snippets (no download).

    Args:
        vocab_size: target vocabulary size (256 byte tokens + specials + merges).
        add_bos: prepend ``<|bos|>`` to every encoded text, as Llama tokenizers do.
        padding_side: ``"right"`` or ``"left"``.
    """
    tok = Tokenizer.from_str(_trained_bpe(vocab_size))
    if add_bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side=padding_side,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def _ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _finish(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    return model


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast | None = None,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-family causal LM (RoPE, RMSNorm, GQA), in eval mode."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        **_ids(tokenizer),
    )
    torch.manual_seed(seed)
    return _finish(LlamaForCausalLM(config))


def tiny_gpt2(
    tokenizer: PreTrainedTokenizerFast | None = None,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2-family causal LM (learned positions, LayerNorm), eval mode."""
    tokenizer = tokenizer or tiny_tokenizer(add_bos=False)
    config = GPT2Config(
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=4,
        n_positions=512,
        **_ids(tokenizer),
    )
    torch.manual_seed(seed)
    return _finish(GPT2LMHeadModel(config))


def tiny_family(name: str, hidden_size: int = 64):
    """``(model, tokenizer)`` of a tiny ``llama`` (RoPE, GQA, BOS) or ``gpt2`` (no BOS)."""
    if name == "llama":
        tok = tiny_tokenizer()
        return tiny_llama(tok, hidden_size=hidden_size), tok
    tok = tiny_tokenizer(add_bos=False)
    return tiny_gpt2(tok, hidden_size=hidden_size), tok


def record_while_decoding(monkeypatch, sampler, look, fail: bool = False) -> list:
    """Record ``look()`` at every decoding step of ``sampler`` (its ``_advance`` is
    wrapped); with ``fail``, the first step raises ``RuntimeError("boom")``."""
    seen, advance = [], sampler._advance

    def spy(*args, **kwargs):
        seen.append(look())
        if fail:
            raise RuntimeError("boom")
        return advance(*args, **kwargs)

    monkeypatch.setattr(sampler, "_advance", spy)
    return seen


def assert_same_samples(runs_a, runs_b, logprob_abs: float) -> None:
    """Two ``Sampler.sample`` results drew the same tokens with the same finish reasons,
    and their summed log-probs agree within ``logprob_abs``."""
    assert len(runs_a) == len(runs_b)
    for group_a, group_b in zip(runs_a, runs_b):
        assert len(group_a) == len(group_b)
        for a, b in zip(group_a, group_b):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=logprob_abs)
