"""A KV cache that writes into preallocated buffers instead of growing by concatenation.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``,
which copies the whole cache of every layer at every decoding step: on a CPU that copy
costs about as much as the attention itself. :func:`preallocated_cache` returns a
``DynamicCache`` whose full-attention layers own a buffer sized for the whole sample
(prompt + new tokens) and hand attention a view of the filled part. The values are the
same, so the model computes the same numbers; only the copies go.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


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
