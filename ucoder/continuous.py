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

from ucoder.decoding import PreallocatedLayer, pad_mask_left
from ucoder.prompt_sharing import SharedPromptCache


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
    mask = torch.cat([pad_mask_left(mask_a, width), pad_mask_left(mask_b, width)])
    used = mask.any(0).nonzero()
    lead = int(used[0]) if len(used) else 0
    mask = mask[:, lead:]
    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers):
        _join_layer(layer_a, layer_b, width, lead, spare)
    if isinstance(cache_a, SharedPromptCache):  # the layers above held the rows' own tokens
        cache_a.join(cache_b)
    return mask



def _join_layer(a: PreallocatedLayer, b: PreallocatedLayer, width: int, lead: int,
                spare: int) -> None:
    """Give ``a`` the joined buffers: zeros where padded (0 attention x garbage is NaN);
    the spare positions stay unwritten until a step fills them."""
    length = width - lead
    rows = a.keys.shape[0] + b.keys.shape[0]
    shape = (rows, a.keys.shape[1], length + spare, a.keys.shape[-1])
    k, v = a.keys.new_empty(shape), a.values.new_empty(shape)
    start = 0
    for src in (a, b):
        n, cols = src.keys.shape[0], src.keys.shape[-2]
        offset = width - cols - lead  # where the source's first column lands
        skip = max(0, -offset)
        first = offset + skip
        for buf, kv in ((k, src.keys), (v, src.values)):
            buf[start:start + n, :, :first] = 0
            buf[start:start + n, :, first:length] = kv[:, :, skip:]
        start += n
    a._k, a._v, a._len = k, v, length
    a.keys, a.values = k[:, :, :length], v[:, :, :length]


class ContinuousDecoder:
    """One :meth:`~ucoder.generation.Sampler.sample` call's rows, decoded with refills.

    Args:
        sampler: the Sampler (its prefill, forward step and end-of-row bookkeeping).
        encoded: token ids of every prompt.
        max_new_tokens, temperature, top_p, top_k, stop, generator: as in ``sample``.
        bar: the progress bar (one update per finished row).
        rows_at_once: the most rows decoded together.
    """

    def __init__(self, sampler, encoded, max_new_tokens, temperature, top_p, top_k, stop,
                 generator, bar, rows_at_once: int):
        self.sampler, self.encoded = sampler, encoded
        self.max_new_tokens, self.stop, self.bar = max_new_tokens, stop, bar
        self.choose = sampler._chooser(temperature, top_p, top_k, generator)
        self.rows_at_once = rows_at_once
        self.refill_at = max(1, rows_at_once // 4)

    def run(self, rows: list) -> int:
        """Decode ``rows`` (in plan order) to the end; returns the tokens produced."""
        sampler = self.sampler
        pending, active, produced = deque(rows), [], 0
        cache = mask = pos = logits = None
        while pending or active:
            free = self.rows_at_once - len(active)
            if pending and (not active or free >= self.refill_at):
                new = [pending.popleft() for _ in range(min(free, len(pending)))]
                new_logits, new_cache, new_mask, new_pos = sampler._prefill(
                    self.encoded, new, self.max_new_tokens)
                if active:
                    mask = join(cache, mask, new_cache, new_mask, self.max_new_tokens)
                    logits = torch.cat([logits, new_logits])
                    pos = torch.cat([pos, new_pos])
                else:
                    cache, mask, logits, pos = new_cache, new_mask, new_logits, new_pos
                active += new
            token, logprob = self.choose(logits, active)
            keep = sampler._advance(active, token.tolist(), logprob.tolist(), self.stop,
                                    self.max_new_tokens, self.bar)
            produced += len(active)
            order = keep
            if keep:
                logits, mask, pos, order = sampler._step(cache, token, mask, pos, keep,
                                                         len(active))
            active = [active[k] for k in order]
        return produced
