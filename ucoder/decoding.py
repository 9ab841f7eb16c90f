"""The tensor-level steps of sampling: batching plan, padding, KV cache, token choice.

Split from :mod:`ucoder.generation` (which re-exports them under their old private
names for existing callers) so that the :class:`~ucoder.generation.Sampler` reads as
the decoding loop alone.
"""

from __future__ import annotations

import torch

# Top-p is applied inside the TOP_CANDIDATES most likely tokens: sorting the full
# vocabulary for every row and step costs more than the model's small layers.
TOP_CANDIDATES = 256


def check_args(n, max_new_tokens, temperature, top_p, top_k) -> None:
    """Raise a ValueError naming the first sampling option out of range."""
    checks = [("n", n, n >= 1, ">= 1"), ("max_new_tokens", max_new_tokens, max_new_tokens >= 1,
              ">= 1"), ("temperature", temperature, temperature >= 0, ">= 0 (0 = greedy)"),
              ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]"), ("top_k", top_k, top_k >= 0, ">= 0")]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def eos_ids(model, tokenizer) -> set[int]:
    """Token ids that end a sample: the generation config's and the tokenizer's EOS."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def device_of(model) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def new_cache(model):
    """transformers' growing ``DynamicCache`` for ``model`` (the reference decode path)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) batch rows of a KV cache in place; ``index`` may repeat rows."""
    cache.batch_select_indices(index)


def left_pad(seqs: list[list[int]], pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` tensors."""
    width = max(len(s) for s in seqs)
    pad = 0 if pad_id is None else pad_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[k, width - len(s):] = 1
    return ids, mask


def plan_batches(encoded: list[list[int]], n: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """Group (prompt, sample) pairs into batches of similar prompt length.

    Longest prompts first, so the memory peak shows up at once rather than at the end.
    A prompt's samples stay together when they fit, so its prefill is shared.
    """
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pairs = [(i, j) for i in order for j in range(n)]
    return [pairs[k:k + batch_size] for k in range(0, len(pairs), batch_size)]


def pick(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
          generator: torch.Generator, fast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the next token per row; return it and its untempered log-prob."""
    if fast:  # log p(t) = logit(t) - logsumexp(logits): no vocabulary-sized output
        lse = logits.logsumexp(dim=-1, keepdim=True)
        logprobs = _LogProbs(logits, lse)
    else:
        logprobs = torch.log_softmax(logits, dim=-1)
    if temperature == 0:
        token = logits.argmax(dim=-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    k = min(top_k or TOP_CANDIDATES, TOP_CANDIDATES, logits.shape[-1])
    top_logits, top_ids = logits.topk(k, dim=-1)
    probs = torch.softmax(top_logits / temperature, dim=-1)
    if top_p < 1.0:
        # Drop tokens once the mass before them reaches top_p (always keep the first).
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)
    token = top_ids.gather(-1, choice).squeeze(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


class _LogProbs:
    """Log-probs read lazily from logits and their logsumexp (only ``gather`` is needed)."""

    def __init__(self, logits: torch.Tensor, lse: torch.Tensor):
        self.logits, self.lse = logits, lse

    def gather(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(dim, index) - self.lse
