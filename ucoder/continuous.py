"""Continuous batching for the Sampler: rows that finish are replaced by pending ones.

The batched path (``decode="fast"``) decodes a batch until its last row ends, so the
matrix products shrink as rows stop (samples stop at very different lengths under stop
strings) and every later step reads the weights for a few rows. Here the batch is
refilled instead: once a quarter of its slots are free, the next pending (prompt,
sample) pairs are prefilled (each distinct prompt once, fanned out to its samples) and
joined to the running KV cache, right-aligned with left padding, so each row keeps its
own positions and mask. Leading columns that no live row attends to are dropped at each
join, which keeps the cache about one prompt plus one sample long.

Each row still conditions on its own prompt and tokens only, so every sample comes from
the same distribution as on the batched path; the rows that share a step change, so a
seed gives other (equally distributed) draws than ``decode="fast"`` whenever a refill
happens. Layers other than the preallocated full-attention ones (sliding windows) cannot
be joined: such models decode on the batched path.
"""

from __future__ import annotations

from collections import deque

import torch

from ucoder.decoding import PreallocatedLayer, left_pad, pick, preallocated_cache, select_rows


def joinable(cache) -> bool:
    """Whether ``cache`` is made only of preallocated layers (which :func:`join` handles)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(layer, PreallocatedLayer) for layer in layers)


def join(cache_a, mask_a: torch.Tensor, cache_b, mask_b: torch.Tensor, spare: int):
    """Rows of ``cache_a`` then ``cache_b`` in ``cache_a``'s layers, right-aligned.

    Returns the joined attention mask. Columns masked for every row are dropped from the
    left; ``spare`` more positions are preallocated for the steps to come.
    """
    width = max(mask_a.shape[1], mask_b.shape[1])
    mask = torch.cat([_pad_left(mask_a, width), _pad_left(mask_b, width)])
    used = mask.any(0).nonzero()
    lead = int(used[0]) if len(used) else 0
    mask = mask[:, lead:]
    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers):
        _join_layer(layer_a, layer_b, width, lead, spare)
    return mask


def _pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1)


def _join_layer(a: PreallocatedLayer, b: PreallocatedLayer, width: int, lead: int,
                spare: int) -> None:
    """Give ``a`` the joined buffers (zeros where padded: 0 attention x garbage is NaN)."""
    length = width - lead
    rows = a.keys.shape[0] + b.keys.shape[0]
    shape = (rows, a.keys.shape[1], length + spare, a.keys.shape[-1])
    k, v = a.keys.new_zeros(shape), a.values.new_zeros(shape)
    start = 0
    for src in (a, b):
        n, cols = src.keys.shape[0], src.keys.shape[-2]
        offset = width - cols - lead  # where the source's first column lands
        skip = max(0, -offset)
        k[start:start + n, :, offset + skip:length] = src.keys[:, :, skip:]
        v[start:start + n, :, offset + skip:length] = src.values[:, :, skip:]
        start += n
    a._k, a._v, a._len = k, v, length
    a.keys, a.values = k[:, :, :length], v[:, :, :length]


class ContinuousDecoder:
    """One :meth:`~ucoder.generation.Sampler.sample` call's rows, decoded with refills.

    Args:
        sampler: the Sampler (its model, tokenizer, forward pass and stop check).
        encoded: token ids of every prompt.
        max_new_tokens, temperature, top_p, top_k, stop, generator: as in ``sample``.
        bar: the progress bar (one update per finished row).
    """

    def __init__(self, sampler, encoded, max_new_tokens, temperature, top_p, top_k, stop,
                 generator, bar):
        self.sampler, self.encoded = sampler, encoded
        self.max_new_tokens, self.stop, self.bar = max_new_tokens, stop, bar
        self.choose = lambda logits: pick(logits.float(), temperature, top_p, top_k,
                                          generator, True)
        self.device = next(sampler.model.parameters()).device
        self.refill_at = max(1, sampler.batch_size // 4)

    def run(self, rows: list) -> int:
        """Decode ``rows`` (in plan order) to the end; returns the tokens produced."""
        pending, active, produced = deque(rows), [], 0
        cache = mask = pos = logits = None
        while pending or active:
            free = self.sampler.batch_size - len(active)
            if pending and (not active or free >= self.refill_at):
                new = [pending.popleft() for _ in range(min(free, len(pending)))]
                new_logits, new_cache, new_mask, new_pos = self._prefill(new)
                if active:
                    mask = join(cache, mask, new_cache, new_mask, self.max_new_tokens)
                    logits = torch.cat([logits, new_logits])
                    pos = torch.cat([pos, new_pos])
                else:
                    cache, mask, logits, pos = new_cache, new_mask, new_logits, new_pos
                active += new
            token, logprob = self.choose(logits)
            keep = self._record(active, token.tolist(), logprob.tolist())
            produced += len(active)
            if len(keep) < len(active):
                active = [active[k] for k in keep]
                if not active:
                    continue
                idx = torch.tensor(keep, device=self.device)
                select_rows(cache, idx)
                token, mask, pos = token[idx], mask[idx], pos[idx]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=-1)
            logits = self.sampler._forward(token.unsqueeze(-1), mask, pos, cache, 1)
            pos = pos + 1
        return produced

    def _record(self, active: list, tokens: list[int], logprobs: list[float]) -> list[int]:
        """Append each row's token; mark finished rows; return the indices that go on."""
        keep = []
        for k, (row, tok, lp) in enumerate(zip(active, tokens, logprobs)):
            row.tokens.append(tok)
            row.logprobs.append(lp)
            row.finish = self.sampler._finished(row, self.stop)
            if row.finish is None and len(row.tokens) >= self.max_new_tokens:
                row.finish = "length"
            if row.finish is None:
                keep.append(k)
            else:
                self.bar.update(1)
        return keep

    def _prefill(self, rows: list):
        """Prefill the rows' distinct prompts once and fan out: (logits, cache, mask, pos)."""
        prompt_ids = sorted({r.prompt_index for r in rows})
        ids, mask = left_pad([self.encoded[i] for i in prompt_ids],
                             self.sampler.tokenizer.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = preallocated_cache(self.sampler.model, ids.shape[1] + self.max_new_tokens)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.sampler._forward(ids, mask, positions, cache, 1)
        slot = {p: k for k, p in enumerate(prompt_ids)}
        fan = torch.tensor([slot[r.prompt_index] for r in rows], device=self.device)
        select_rows(cache, fan)
        mask = mask[fan]
        return logits[fan], cache, mask, mask.sum(-1, keepdim=True)
