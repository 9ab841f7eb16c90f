"""Shared-prompt (cascade) attention for the continuous decoder.

The n samples of a prompt attend to the same prompt keys and values. Fanning a
prompt's KV cache out to its rows copies it n times, and every decoding step then reads
it n times over; on a CPU a decoding step's attention is bound by those reads. Here each
layer keeps the distinct prompts' keys and values once (:class:`SharedPromptLayer`) and
each row only the tokens it generated. A step's attention is computed over the two parts
and merged through their log-sum-exps: the same softmax, split in two (the idea of
FlashInfer's cascade attention and of Hydragen). The result equals SDPA's up to float
rounding (about 1e-7), not bit for bit.

The model attends through :func:`shared_prompt_attention`, registered with transformers'
``AttentionInterface`` and switched on only while :func:`attention_of` is active; every
other call (prefill, other caches) goes to transformers' own SDPA function.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ucoder.decoding import PreallocatedLayer, pad_mask_left

ATTENTION = "ucoder_shared_prompt"


class SharedPromptLayer(PreallocatedLayer):
    """One layer: the distinct prompts' keys and values, and each row's own tokens.

    The first ``update`` (the prefill) stores the prompts; once the cache is fanned out
    (:meth:`SharedPromptCache.fan_out`), ``keys``/``values`` are the rows' generated
    tokens only, in the preallocated buffers of :class:`PreallocatedLayer`.
    """

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.prompt_k: torch.Tensor | None = None
        self.prompt_v: torch.Tensor | None = None
        self.fanned = False

    def update(self, key_states, value_states, *args, **kwargs):
        if self.fanned:
            return super().update(key_states, value_states, *args, **kwargs)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.prompt_k is not None:  # the prompts' own tokens after a common prefix
            key_states = torch.cat([self.prompt_k, key_states], dim=-2)
            value_states = torch.cat([self.prompt_v, value_states], dim=-2)
        self.prompt_k, self.prompt_v = key_states, value_states
        self.keys, self.values = key_states, value_states
        return key_states, value_states

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Rows of the generated tokens; before the fan-out, rows of the prompts."""
        if self.fanned:
            return super().batch_select_indices(indices)
        self.keep_prompts(indices, 0)
        self.keys, self.values = self.prompt_k, self.prompt_v

    def fan_out(self, rows: int) -> None:
        """From now on hold ``rows`` rows of generated tokens (none yet)."""
        shape = (rows, *self.prompt_k.shape[1:2], 0, self.prompt_k.shape[-1])
        self.keys = self.values = self.prompt_k.new_empty(shape)
        self._k = self._v = None
        self._len, self.fanned = 0, True

    def keep_prompts(self, index: torch.Tensor, lead: int) -> None:
        """Keep prompts ``index`` (in that order) from column ``lead`` on."""
        self.prompt_k = self.prompt_k.index_select(0, index)[:, :, lead:]
        self.prompt_v = self.prompt_v.index_select(0, index)[:, :, lead:]


class SharedPromptCache(DynamicCache):
    """A ``DynamicCache`` of :class:`SharedPromptLayer`; ``owner[r]`` is row r's prompt.

    Args:
        model: the model whose layers the cache holds (full attention only; see
            :func:`shareable`).
        capacity: positions preallocated for each row's generated tokens.
    """

    def __init__(self, model, capacity: int):
        super().__init__(config=model.config)  # shareable() needs this signature
        self.layers = [SharedPromptLayer(capacity) for _ in self.layers]
        self.owner: torch.Tensor | None = None
        self.prompt_mask: torch.Tensor | None = None
        self._groups = self._own_bias = self._prompt_bias = None

    def fan_out(self, owner: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        """Give each row its prompt (``owner``) after the prefill; no keys are copied."""
        self.owner, self.prompt_mask, self._groups = owner, prompt_mask.bool(), None
        self._prompt_bias = None
        for layer in self.layers:
            layer.fan_out(len(owner))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Select rows (before :meth:`fan_out`: prompts, as after a common prefix)."""
        super().batch_select_indices(indices)
        if self.owner is not None:
            self.owner, self._groups = self.owner[indices], None

    def move_rows(self, holes: list[int], movers: list[int], rows: int) -> None:
        """:meth:`PreallocatedLayer.move_rows` on every layer, and the rows' owners."""
        for layer in self.layers:
            layer.move_rows(holes, movers, rows)
        owner = self.owner.clone()
        owner[holes] = self.owner[movers]
        self.owner, self._groups = owner[:rows], None

    def bias_of(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """``mask`` (transformers' 4-D mask of the rows' own tokens) as an additive bias,
        made once per step: every layer gets the same mask object."""
        if mask is None or mask.dtype != torch.bool:
            return mask
        if self._own_bias is None or self._own_bias[0] is not mask:
            self._own_bias = (mask, _bias(mask))
        return self._own_bias[1]

    def prompt_bias(self) -> torch.Tensor:
        """The prompts' padding as an additive bias over their keys, ``(P, 1, 1, W)``."""
        if self._prompt_bias is None:
            self._prompt_bias = _bias(self.prompt_mask[:, None, None, :])
        return self._prompt_bias

    def groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(slots, where)``: ``slots[p]`` lists prompt p's rows, padded with the index
        ``len(owner)``; ``where[r]`` is row r's place in ``slots.flatten()``."""
        if self._groups is None:
            owner = self.owner
            prompts = len(self.prompt_mask)
            sorted_owner, order = owner.sort(stable=True)
            counts = torch.bincount(owner, minlength=prompts)
            starts = counts.cumsum(0) - counts
            place = torch.arange(len(owner), device=owner.device) - starts[sorted_owner]
            width = max(int(counts.max()), 1) if len(owner) else 1
            slots = owner.new_full((prompts, width), len(owner))
            slots[sorted_owner, place] = order
            where = owner.new_empty(len(owner))
            where[order] = sorted_owner * width + place
            self._groups = (slots, where)
        return self._groups

    def join(self, other: SharedPromptCache) -> None:
        """Append ``other``'s prompts and owners (its rows' own tokens are joined by
        :func:`ucoder.continuous.join`); prompts no row uses any more are dropped."""
        width = max(self.prompt_mask.shape[1], other.prompt_mask.shape[1])
        mask = torch.cat([pad_mask_left(m, width) for m in (self.prompt_mask, other.prompt_mask)])
        owner = torch.cat([self.owner, other.owner + len(self.prompt_mask)])
        used, owner = torch.unique(owner, return_inverse=True)
        mask = mask[used]
        lead = int(mask.any(0).nonzero()[0])
        for a, b in zip(self.layers, other.layers):
            a.prompt_k = torch.cat([_pad_kv(a.prompt_k, width), _pad_kv(b.prompt_k, width)])
            a.prompt_v = torch.cat([_pad_kv(a.prompt_v, width), _pad_kv(b.prompt_v, width)])
            a.keep_prompts(used, lead)
        self.owner, self.prompt_mask, self._groups = owner, mask[:, lead:], None
        self._prompt_bias = None


def _bias(mask: torch.Tensor) -> torch.Tensor:
    """0 where ``mask`` is True, -inf where it is False (float32)."""
    return torch.zeros(mask.shape).masked_fill_(~mask, float("-inf")).to(mask.device)



def _pad_kv(kv: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad keys or values with zeros to ``width`` positions (masked: never read)."""
    pad = width - kv.shape[-2]
    return kv if pad == 0 else torch.cat([kv.new_zeros(*kv.shape[:2], pad, kv.shape[-1]), kv], -2)


def shareable(model) -> bool:
    """Whether ``model`` can decode with shared prompts: SDPA attention and only
    full-attention layers (sliding windows keep their own cache layers)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", ATTENTION):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except TypeError:  # older transformers
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def shared_prompt_attention(module, query, key, value, attention_mask, *, scaling=None,
                            dropout=0.0, shared_prompts: SharedPromptCache | None = None,
                            **kwargs):
    """transformers attention function: one query token per row attends to its prompt
    (shared) and its own tokens (``key``/``value``); anything else goes to SDPA."""
    if shared_prompts is None or shared_prompts.owner is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scaling = dim ** -0.5 if scaling is None else scaling
    # Head h reads KV head h // G; scaling the query scales the scores (one small product).
    q = (query * scaling).reshape(rows, kv_heads, heads // kv_heads, dim)
    own = _partial(q, key, value, shared_prompts.bias_of(attention_mask))
    prompt = _prompt_partial(q, shared_prompts, module.layer_idx)
    top = torch.maximum(own[0], prompt[0])
    w_own, w_prompt = (own[0] - top).exp_(), (prompt[0] - top).exp_()
    out = (own[2] * w_own + prompt[2] * w_prompt) / (own[1] * w_own + prompt[1] * w_prompt)
    return out.reshape(rows, 1, heads, dim), None


def _partial(q, key, value, bias):
    """``(max, sum of exp, exp-weighted values)`` of one part's scores (``bias``: 0 where
    attended, -inf where masked, or None)."""
    scores = _scores(q, key)
    if bias is not None:
        scores.add_(bias)
    top = scores.amax(dim=-1, keepdim=True)
    weights = scores.sub_(top).exp_()
    return top, weights.sum(dim=-1, keepdim=True), torch.matmul(weights, value)


def _scores(q, key):
    """``q @ keyᵀ`` per row and head. On a CPU, torch's bf16 batched product copies the
    transposed key (a strided view of its preallocated buffer) at every call, so there it
    takes ``(key @ qᵀ)ᵀ``, made contiguous: a copy of the scores only (rows x heads x
    tokens). Float32 keeps the direct product, which needs no copy."""
    if key.dtype == torch.float32 or key.device.type != "cpu":
        return torch.matmul(q, key.transpose(-1, -2))
    return torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).contiguous()


def _prompt_partial(q, cache: SharedPromptCache, layer_idx: int):
    """:func:`_partial` over each row's prompt, computed once per prompt for its rows."""
    layer = cache.layers[layer_idx]
    slots, where = cache.groups()
    rows, kv_heads, group, dim = q.shape
    prompts, width = slots.shape
    padded = torch.cat([q, q.new_zeros(1, kv_heads, group, dim)])[slots]
    grouped = padded.permute(0, 2, 1, 3, 4).reshape(prompts, kv_heads, width * group, dim)
    parts = _partial(grouped, layer.prompt_k, layer.prompt_v, cache.prompt_bias())
    return tuple(x.reshape(prompts, kv_heads, width, group, -1).transpose(1, 2)
                 .reshape(prompts * width, kv_heads, group, -1)[where] for x in parts)


AttentionInterface.register(ATTENTION, shared_prompt_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


@contextlib.contextmanager
def attention_of(model):
    """Attend through :func:`shared_prompt_attention` while inside (SDPA before and after)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = inner.config._attn_implementation
    inner.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        inner.set_attn_implementation(before)
