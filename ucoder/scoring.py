"""Log-probs of given continuations: the scoring half of a generation backend.

:meth:`ucoder.generation.Sampler.score` delegates here. Each prompt is prefilled once;
its KV cache is copied to one row per continuation, and all continuations of a batch
are then read in a single forward pass (right-padded behind the left-padded prompts).
A continuation's first token is scored from the prefill's last position, so
single-token continuations (the 1-10 score tokens of a rating) cost only the prefill.

Tokenization: the prompt text is encoded exactly as ``sample()`` encodes it, and each
continuation is encoded on its own (no special tokens) and appended. Encoding
prompt + continuation together could merge tokens across the boundary and so condition
on a different prompt than ``sample()`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ucoder.decoding import device_of, last_logits_only, left_pad, new_cache


def score_continuations(sampler, texts: Sequence[str],
                        continuations: Sequence[Sequence[str]]) -> list[list[float]]:
    """Summed log-prob of each continuation given its (already formatted) prompt text.

    Args:
        sampler: a :class:`ucoder.generation.Sampler` (its model, tokenizer, batch size).
        texts: the exact prompt texts (``Sampler.format_prompt`` output).
        continuations: per prompt, the strings to score.

    Returns:
        Per prompt, one summed log-prob per continuation (0.0 for an empty string).
    """
    if len(texts) != len(continuations):
        raise ValueError(f"continuations has {len(continuations)} lists for {len(texts)} "
                         "prompts; give one list of continuations per prompt")
    tok = sampler.tokenizer
    prompts = [sampler.encode_prompt(t) for t in texts]
    conts = [[tok(c, add_special_tokens=False)["input_ids"] for c in group]
             for group in continuations]
    out = [[0.0] * len(group) for group in conts]
    was_training = sampler.model.training
    sampler.model.eval()
    try:
        with torch.inference_mode():
            for batch in _batches(conts, sampler.batch_size):
                _score_batch(sampler, prompts, conts, batch, out)
    finally:
        sampler.model.train(was_training)
    return out


def _batches(conts: list[list[list[int]]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped so a group's continuation rows stay near ``batch_size``."""
    groups: list[list[int]] = []
    rows = 0
    for i, group in enumerate(conts):
        if not group:
            continue
        if groups and rows + len(group) <= batch_size:
            groups[-1].append(i)
            rows += len(group)
        else:
            groups.append([i])
            rows = len(group)
    return groups


def _score_batch(sampler, prompts, conts, batch: list[int], out) -> None:
    model, device = sampler.model, device_of(sampler.model)
    ids, mask = left_pad([prompts[i] for i in batch], sampler.tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    cache = new_cache(model)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                  logits_to_keep=last_logits_only(ids),
                  **{sampler._cache_kw: cache}).logits[:, -1, :].float()
    first = torch.log_softmax(first, dim=-1)
    rows = [(k, i, j) for k, i in enumerate(batch) for j in range(len(conts[i]))]
    for k, i, j in rows:
        if conts[i][j]:
            out[i][j] = float(first[k, conts[i][j][0]])
    longer = [r for r in rows if len(conts[r[1]][r[2]]) > 1]
    if longer:
        _score_rest(sampler, cache, mask, conts, longer, out)


def _score_rest(sampler, cache, mask, conts, rows, out) -> None:
    """Add the log-probs of every continuation token after the first."""
    device = mask.device
    fan = torch.tensor([k for k, _, _ in rows], device=device)
    cache.batch_select_indices(fan)
    seqs = [conts[i][j][:-1] for _, i, j in rows]  # inputs predicting tokens 2..n
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    cont_mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
        cont_mask[r, :len(s)] = 1
    base = mask[fan]
    positions = base.sum(-1, keepdim=True) + torch.arange(width, device=device)
    logits = sampler.model(input_ids=ids, attention_mask=torch.cat([base, cont_mask], -1),
                           position_ids=positions, use_cache=True,
                           **{sampler._cache_kw: cache}).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    for r, (_, i, j) in enumerate(rows):
        targets = torch.tensor(conts[i][j][1:], device=device)
        picked = logp[r, :len(targets)].gather(-1, targets[:, None])
        out[i][j] += float(picked.sum())
