"""The tensor-level steps of sampling: batching plan, padding, KV cache, token choice.

The KV cache of the fast path (:func:`preallocated_cache`): transformers'
``DynamicCache`` appends each step's keys and values with ``torch.cat``, which copies
the whole cache of every layer at every decoding step. :class:`PreallocatedLayer` owns
a buffer sized for the whole sample (prompt + new tokens) and hands attention a view
of the filled part; the values are the same, so the model computes the same numbers.

Split from :mod:`ucoder.generation` (which re-exports them under their old private
names for existing callers) so that the :class:`~ucoder.generation.Sampler` reads as
the decoding loop alone.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

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


def kv_bytes_per_token(model) -> int:
    """Bytes of KV cache one token takes in ``model`` (keys and values of every layer)."""
    cfg = model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                 torch.float32)
    width = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * width


def kv_budget_bytes(model, gib: float | None) -> int:
    """The KV-cache budget: ``gib`` GiB, or by default 2 GiB on a CPU and half the free
    memory of a CUDA device."""
    if gib is not None:
        return int(gib * 2**30)
    device = device_of(model)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 2)
    return 2 * 2**30


def new_cache(model):
    """transformers' growing ``DynamicCache`` for ``model`` (the reference decode path)."""
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) batch rows of a KV cache in place; ``index`` may repeat rows."""
    cache.batch_select_indices(index)


def drop_rows(cache, keep: list[int], total: int, device) -> list[int]:
    """Remove the rows not in ``keep`` (of ``total``) from a KV cache, in place.

    Returns the new row order: for each row left, its index before. With preallocated
    layers the rows left at the tail move into the freed slots, one row's copy per
    finished row: compacting in order would copy the whole cache of every layer each
    time a sample ends, which under stop strings is nearly every step. Other caches keep
    the order (one ``index_select``).
    """
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(layer, PreallocatedLayer) for layer in layers):
        select_rows(cache, torch.tensor(keep, device=device))
        return list(keep)
    kept, n = set(keep), len(keep)
    holes = [i for i in range(n) if i not in kept]
    movers = [i for i in range(n, total) if i in kept]
    if hasattr(cache, "move_rows"):  # a cache with per-row state of its own
        cache.move_rows(holes, movers, n)
    else:
        for layer in layers:
            layer.move_rows(holes, movers, n)
    order = list(range(n))
    for hole, mover in zip(holes, movers):
        order[hole] = mover
    return order


def last_logits_only(input_ids: torch.Tensor) -> int | torch.Tensor:
    """``logits_to_keep`` for the last position only, as an index tensor when the input is
    longer than one token.

    ``logits_to_keep=1`` makes transformers slice the hidden states to a view that
    ``torch.matmul`` cannot fold into one matrix, so the output layer runs as a batched
    product through a contiguous copy of its weight per sequence (8 prompts of the embedded
    model: 8 x 576 x 49152 values). An index gathers the last position into a contiguous
    tensor first; the logits are the same dot products. The index stays on the CPU, which
    indexes a tensor on any device (with ``device_map="auto"`` the last hidden states need
    not sit where the inputs do).
    """
    width = input_ids.shape[-1]
    return 1 if width == 1 else torch.tensor([width - 1])


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


def common_prefix_length(seqs: list[list[int]]) -> int:
    """How many leading tokens all ``seqs`` share, leaving each at least one of its own."""
    shared = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        shared += 1
    return min(shared, min(len(s) for s in seqs) - 1)


def pad_mask_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a 2-D attention mask with zeros (not attended) to ``width`` columns."""
    return torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1)


def plan_batches(encoded: list[list[int]], n: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """Group (prompt, sample) pairs into batches of similar prompt length.

    Longest prompts first, so the memory peak shows up at once rather than at the end.
    A prompt's samples stay together when they fit, so its prefill is shared.
    """
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pairs = [(i, j) for i in order for j in range(n)]
    return [pairs[k:k + batch_size] for k in range(0, len(pairs), batch_size)]


def pick(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
         generator: torch.Generator, fast: bool = True,
         order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the next token per row; return it and its untempered log-prob.

    ``order``: the order in which rows draw from ``generator`` (``None``: as stored), so
    a seed gives the same tokens however the rows are stored; only the small top-k
    probabilities are permuted for it, never the logits. With ``fast`` the log-probs
    come from a log-sum-exp taken in place, which overwrites ``logits``.
    """
    if temperature == 0:
        token = logits.argmax(dim=-1)
    else:
        token = _draw(logits, temperature, top_p, top_k, generator, order)
    if not fast:
        return token, torch.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)
    chosen = logits.gather(-1, token[:, None]).squeeze(-1)
    return token, chosen - logsumexp_(logits)


def _draw(logits, temperature, top_p, top_k, generator, order) -> torch.Tensor:
    """Sample one token per row within the top-k / top-p set, rows drawn in ``order``."""
    k = min(top_k or TOP_CANDIDATES, TOP_CANDIDATES, logits.shape[-1])
    top_logits, top_ids = logits.topk(k, dim=-1)
    probs = torch.softmax(top_logits / temperature, dim=-1)
    if top_p < 1.0:
        # Drop tokens once the mass before them reaches top_p (always keep the first).
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    probs = probs.cpu()
    if order is None:
        choice = torch.multinomial(probs, 1, generator=generator)
    else:
        order = order.cpu()
        choice = torch.empty((len(order), 1), dtype=torch.long)
        choice[order] = torch.multinomial(probs[order], 1, generator=generator)
    return top_ids.gather(-1, choice.to(logits.device)).squeeze(-1)


def logsumexp_(x: torch.Tensor) -> torch.Tensor:
    """``x.logsumexp(-1)`` with the same operations as torch's, in place on ``x``.

    torch's version allocates a vocabulary-sized temporary for ``x - max`` at every
    decoding step; on a CPU that is fresh memory (page faults) each time.
    """
    top = x.amax(dim=-1, keepdim=True)
    top.masked_fill_(top.abs() == float("inf"), 0.0)
    return x.sub_(top).exp_().sum(dim=-1).log_().add_(top.squeeze(-1))


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers of ``capacity`` positions.

    ``keys``/``values`` are views of the filled part, as ``DynamicLayer`` exposes them,
    so the rest of transformers (masks, lengths) sees an ordinary dynamic layer.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args,
               **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._len + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            self._grow(key_states, max(end, self.capacity))
        self._k[:, :, self._len:end] = key_states
        self._v[:, :, self._len:end] = value_states
        self._len = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def _grow(self, like: torch.Tensor, size: int) -> None:
        """(Re)allocate the buffers with room for ``size`` positions, keeping the data."""
        shape = (like.shape[0], like.shape[1], size, like.shape[-1])
        k, v = like.new_empty(shape), like.new_empty(shape)
        if self._k is not None and self._len:
            k[:, :, :self._len] = self._k[:, :, :self._len]
            v[:, :, :self._len] = self._v[:, :, :self._len]
        self._k, self._v = k, v

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) batch rows, in one copy of the buffers."""
        if self._k is None or not self._len:
            return
        self._k, self._v = self._k.index_select(0, indices), self._v.index_select(0, indices)
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def move_rows(self, holes: list[int], movers: list[int], rows: int) -> None:
        """Copy rows ``movers`` into rows ``holes`` and keep the first ``rows`` rows."""
        if self._k is None or not self._len:
            return
        if holes:
            dst = torch.tensor(holes, device=self._k.device)
            src = torch.tensor(movers, device=self._k.device)
            for buf in (self._k, self._v):
                filled = buf[:, :, :self._len]
                filled.index_copy_(0, dst, filled.index_select(0, src))
        self._k, self._v = self._k[:rows], self._v[:rows]
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def reset(self) -> None:
        self._k = self._v = None
        self._len = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.keys is not None and self.is_initialized:
            self._len = self.keys.shape[-2]


def preallocated_cache(model, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` for ``model`` whose full-attention layers preallocate ``capacity``.

    Sliding-window or other special layers keep transformers' own implementation.
    """
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers
        cache = DynamicCache()
    layers = getattr(cache, "layers", None)
    if layers:
        cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
                        for layer in layers]
    return cache
