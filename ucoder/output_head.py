"""The output layer of a decoding step, in vocabulary chunks into a reused buffer (CPU).

A decoding step's logits are rows x vocabulary floats: 47 MiB at 240 rows of a 49k
vocabulary. On a CPU, a fresh tensor that large is fresh memory from the system (glibc
maps blocks over 32 MiB on their own, and gives freed heap back), so every step
page-faults through it while the matrix product writes it. And one float32 product over
the whole vocabulary runs below the rate of the same product taken a few hundred columns
at a time. Here, while a :class:`~ucoder.generation.Sampler` decodes, the output layer
writes each step's logits into one float32 buffer that lives for the whole call. The
logits are those of the layer itself: the same dot products, split along the vocabulary
only. They came out bit for bit equal for every shape tried here (the embedded model's
among them); a BLAS may pick other kernels for other widths, so in general they are equal
to float rounding.

A bfloat16 layer (the merged generation copy on CPUs with native bf16) multiplies the
whole vocabulary at once into a reused bf16 buffer, and its logits are widened into the
float32 buffer: the values the Sampler's own widening would give, without a fresh bf16
and a fresh float32 tensor per step. The chunk sizes come from a microbenchmark on
random weights (see ``benchmarks/generation_results.md``).

Only decoding steps reuse the buffer (see :meth:`ChunkedHead.reusing`): their logits are
drawn from before the next step runs. Any other call goes to the layer as it is.
"""

from __future__ import annotations

import contextlib

import torch

# Vocabulary columns per product, a multiple of 64; see benchmarks/generation_results.md.
CHUNK = 512
# The layer dtypes measured. A bfloat16 layer multiplies the whole vocabulary at once:
# in bf16 that was as fast as or faster than any chunk at every row count measured.
DTYPES = (torch.float32, torch.bfloat16)


class ChunkedHead:
    """Stands in for ``head.forward`` (a plain ``torch.nn.Linear``) while installed.

    Decoding steps get float32 logits whatever the layer's dtype (see the module's
    docstring); ``chunk`` overrides the dtype's columns per product.
    """

    def __init__(self, head: torch.nn.Linear, chunk: int | None = None):
        whole = head.weight.shape[0] if head.weight.dtype == torch.bfloat16 else None
        self.head, self.chunk = head, chunk or whole or CHUNK
        self._buffer: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None  # one chunk in the layer's dtype
        self._reuse = False

    @contextlib.contextmanager
    def reusing(self):
        """Calls inside write into the shared buffer: their result is valid until the
        next such call."""
        self._reuse = True
        try:
            yield
        finally:
            self._reuse = False

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self._reuse or torch.is_grad_enabled():  # out= products have no autograd
            return torch.nn.functional.linear(hidden, self.head.weight, self.head.bias)
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = self._rows(len(flat))
        scratch = self._chunk_rows(len(flat))
        weight, bias = self.head.weight, self.head.bias
        for start in range(0, weight.shape[0], self.chunk):
            w = weight[start:start + self.chunk].t()
            part = out[:, start:start + self.chunk]
            dest = part if scratch is None else scratch[:, :w.shape[1]]
            if bias is None:
                torch.mm(flat, w, out=dest)
            else:
                torch.addmm(bias[start:start + self.chunk], flat, w, out=dest)
            if scratch is not None:
                part.copy_(dest)
        return out.view(*hidden.shape[:-1], weight.shape[0])

    def _rows(self, rows: int) -> torch.Tensor:
        """The first ``rows`` rows of the float32 buffer (grown when a step has more)."""
        if self._buffer is None or len(self._buffer) < rows:
            self._buffer = self.head.weight.new_empty(rows, self.head.weight.shape[0],
                                                      dtype=torch.float32)
        return self._buffer[:rows]

    def _chunk_rows(self, rows: int) -> torch.Tensor | None:
        """A chunk's product in the layer's dtype, to widen (``None`` for float32)."""
        weight = self.head.weight
        if weight.dtype == torch.float32:
            return None
        if self._scratch is None or len(self._scratch) < rows:
            self._scratch = weight.new_empty(rows, self.chunk)
        return self._scratch[:rows]


def chunkable(model) -> torch.nn.Linear | None:
    """``model``'s output layer when it can be chunked: a plain float32 or bfloat16
    ``Linear`` on a CPU without hooks (a LoRA or 4-bit layer has its own type), else
    ``None``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or "forward" in vars(head):
        return None
    if head.weight.device.type != "cpu" or head.weight.dtype not in DTYPES:
        return None  # measured on CPU float32 and bfloat16 only
    if head._forward_hooks or head._forward_pre_hooks:
        return None
    return head


@contextlib.contextmanager
def chunked_head(model):
    """Install a :class:`ChunkedHead` on ``model``'s output layer while inside; yields it,
    or ``None`` (and changes nothing) when the layer is not :func:`chunkable`."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = chunkable(inner)
    if head is None:
        yield None
        return
    chunked = ChunkedHead(head)
    head.forward = chunked
    try:
        yield chunked
    finally:
        del head.forward
