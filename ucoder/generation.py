"""Batched sampling with token log-probs: many prompts x n samples each.

The :class:`Sampler` is the Hugging Face backend of the :class:`GenerationBackend`
interface (a vLLM backend can sit behind the same ``sample`` signature). What makes
it fast on a CPU, where every forward pass is weight-bound:

* a prompt is prefilled **once** for its n samples; on the continuous path its KV cache
  is kept once and attended once per prompt (:mod:`ucoder.prompt_sharing`), elsewhere
  it is copied to each sample;
* prompts are grouped by length (little left padding) into batches of up to
  ``batch_size`` rows, so each weight load serves many tokens;
* prefill computes logits for the last position only (the 49k-vocab head is costly);
* rows that finished (EOS, stop string, length) leave the batch at once;
* the KV cache is written into buffers sized for the whole sample
  (:mod:`ucoder.decoding`) instead of being re-concatenated at every step, log-probs
  come from one ``logsumexp`` rather than a full ``log_softmax``, and the per-step
  bookkeeping reads each step's tokens in one transfer. ``decode="reference"`` keeps
  the earlier path (growing cache, full ``log_softmax``) for comparison; both compute
  the same distribution in the model's own dtype.

Log-probs are those of the model's own (untempered) distribution, so they equal a
manual forward pass over prompt + completion and serve as a fluency signal.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ucoder.decoding import (
    TOP_CANDIDATES,  # noqa: F401  (re-exported)
    common_prefix_length,
    kv_budget_bytes,
    kv_bytes_per_token,
    last_logits_only,
    preallocated_cache,
)
from ucoder.decoding import check_args as _check_args
from ucoder.decoding import device_of as _device_of
from ucoder.decoding import drop_rows as _drop_rows
from ucoder.decoding import eos_ids as _eos_ids
from ucoder.decoding import left_pad as _left_pad
from ucoder.decoding import new_cache as _new_cache
from ucoder.decoding import pick as _pick
from ucoder.decoding import plan_batches as _plan_batches
from ucoder.decoding import select_rows as _select_rows
from ucoder.output_head import chunked_head
from ucoder.prompt_sharing import SharedPromptCache, attention_of, shareable

DECODE_PATHS = ("continuous", "fast", "reference")
MIN_COMMON_PREFIX = 16  # shorter common prefixes are not worth a prefill of their own
COPY_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Sample:
    """One sampled completion."""

    text: str
    token_ids: list[int]
    sum_logprob: float
    mean_logprob: float
    num_tokens: int
    finish_reason: str  # "eos" | "stop" | "length"
    prompt_index: int = 0
    sample_index: int = 0
    prompt_text: str = field(default="", repr=False)


class GenerationBackend(Protocol):
    """What the IPC stages need from a generator; implemented by :class:`Sampler`."""

    def sample(self, prompts: Sequence[str], n: int = 1, **kwargs) -> list[list[Sample]]:
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], *,
              prefix: str = "") -> list[list[float]]:
        ...


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    text: str | None = None
    seq: int = 0  # place in the batching plan: tokens are drawn in this order


class Sampler:
    """Sample many completions per prompt from a causal LM (Hugging Face backend).

    Args:
        model: a transformers causal LM (plain, 4-bit or PEFT-wrapped).
        tokenizer: its tokenizer.
        batch_size: at most this many rows (prompt x sample) decoded together. Large
            batches make the matrix products efficient (on this project's CPU, 256 rows
            ran 1.26x the tokens/s of 64: ``benchmarks/generation_results.md``).
        kv_cache_gib: the KV cache's budget; a call with long prompts or a long
            ``max_new_tokens`` decodes fewer rows at once so that its cache fits.
            ``None``: 2 GiB on a CPU, half the free memory of a CUDA device.
        chat: wrap prompts in the tokenizer's chat template; ``None`` = when it has one.
        system_prompt: optional system turn for chat prompts.
        show_progress: show a tqdm bar (samples done, tokens/s).
        decode: ``continuous`` (the default: rows that finish are replaced by pending
            ones, :mod:`ucoder.continuous`), ``fast`` (batch by batch, preallocated KV
            cache, see the module docstring) or ``reference`` (the earliest path: growing
            cache, full ``log_softmax``). All three sample the same distribution.
        dtype: generate from a copy of the model in this dtype (``bfloat16``,
            ``float32``, ``float16``), made at each :meth:`sample` call with any LoRA
            merged and 4-bit weights de-quantized (``ucoder.models.merged_generation_copy``),
            so it follows training. ``None``: the model as it is. ``bfloat16`` is faster
            on CPUs with AVX512-BF16 or AMX but changes the numbers (log-probs move by
            about 1e-2 per token), so it is never picked for you.
        share_prompts: on the continuous path, keep each prompt's KV cache once for all
            its samples and attend to it once per prompt (:mod:`ucoder.prompt_sharing`)
            instead of copying it to every row. The same softmax, to float rounding.
            ``None``: on a CPU (where it was measured) for models with SDPA attention and
            full-attention layers only.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 256, chat: bool | None = None,
                 system_prompt: str | None = None, show_progress: bool = True,
                 decode: str = "continuous", dtype: str | None = None,
                 kv_cache_gib: float | None = None, share_prompts: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is not allowed: expected >= 1")
        if kv_cache_gib is not None and not kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib={kv_cache_gib!r} is not allowed: expected > 0 "
                             "or None (automatic)")
        if decode not in DECODE_PATHS:
            raise ValueError(f"decode={decode!r} is not allowed: expected one of {DECODE_PATHS}")
        if share_prompts not in (None, True, False):
            raise ValueError(f"share_prompts={share_prompts!r} is not allowed: expected None "
                             "(automatic), True or False")
        if dtype is not None and dtype not in COPY_DTYPES:
            raise ValueError(f"dtype={dtype!r} is not allowed: expected None or one of "
                             f"{sorted(COPY_DTYPES)}")
        self.decode, self.dtype, self.share_prompts = decode, dtype, share_prompts
        self._generator_model = model
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size, self.kv_cache_gib = batch_size, kv_cache_gib
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True but the tokenizer has no chat template; use chat=False")
        self.system_prompt = system_prompt
        self.show_progress = show_progress
        self.eos_ids = _eos_ids(model, tokenizer)
        # transformers 5 renamed past_key_values -> cache; support both. A PEFT wrapper
        # passes keyword arguments through, so ask the model it wraps.
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(inner.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.last_stats: dict[str, float] = {}
        self._sharing = False  # set while a continuous decode keeps prompts shared
        self._head = None  # the output layer's ChunkedHead while a fast decode runs

    # -- prompts -------------------------------------------------------------------------
    def format_prompt(self, prompt: str, prefix: str = "") -> str:
        """The exact text the model sees for ``prompt`` (chat template applied)."""
        if not self.chat:
            return prompt + prefix
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return text + prefix

    def encode_prompt(self, text: str) -> list[int]:
        # A chat template already contains its special tokens; plain text gets BOS etc.
        return self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]

    # -- scoring -------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], *,
              prefix: str = "") -> list[list[float]]:
        """Summed log-prob of each given continuation of each prompt.

        Conditioned on exactly the text :meth:`sample` conditions on
        (``format_prompt(prompt, prefix)``); each continuation is tokenized on its own
        and appended (see :mod:`ucoder.scoring`).

        Args:
            prompts: user prompts (or raw text when ``chat=False``).
            continuations: per prompt, the strings whose log-probs are wanted.
            prefix: text after the prompt, as in :meth:`sample`.

        Returns:
            Per prompt, one summed (untempered) log-prob per continuation.
        """
        from ucoder.scoring import score_continuations

        texts = [self.format_prompt(p, prefix) for p in prompts]
        return score_continuations(self, texts, continuations)

    # -- sampling ------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, prompts: Sequence[str], n: int = 1, *, max_new_tokens: int = 256,
               temperature: float = 0.8, top_p: float = 0.95, top_k: int = 0,
               stop: Sequence[str] = (), seed: int = 0, prefix: str = "") -> list[list[Sample]]:
        """Sample ``n`` completions for each prompt.

        Args:
            prompts: user prompts (or raw text when ``chat=False``).
            n: samples per prompt; returned grouped per prompt, in order.
            max_new_tokens: length cap per sample.
            temperature: 0 means greedy.
            top_p: nucleus sampling mass (within the 256 most likely tokens).
            top_k: keep only the k most likely tokens (0 = off).
            stop: strings that end a sample; the text is cut before the first one.
            seed: the same seed and inputs give the same samples.
            prefix: text appended after the prompt (e.g. a code fence) for the model to
                continue; it is not part of the returned text.

        Returns:
            One list of ``n`` :class:`Sample` per prompt.
        """
        _check_args(n, max_new_tokens, temperature, top_p, top_k)
        texts = [self.format_prompt(p, prefix) for p in prompts]
        encoded = [self.encode_prompt(t) for t in texts]
        rows = [[_Row(i, j) for j in range(n)] for i in range(len(prompts))]
        generator = torch.Generator().manual_seed(seed)
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(total=len(prompts) * n, desc="sampling", unit="sample",
                   disable=not self.show_progress, dynamic_ncols=True)
        start = time.perf_counter()
        try:
            with self._copy_made(), self._chunked_head():
                rows_at_once = self._rows_at_once(encoded, max_new_tokens)
                produced = self._decode_all(encoded, rows, rows_at_once, bar, max_new_tokens,
                                            temperature, top_p, top_k, list(stop), generator)
        finally:
            bar.close()
            self.model.train(was_training)
        seconds = time.perf_counter() - start
        self.last_stats = {"tokens": produced, "seconds": seconds,
                           "tokens_per_s": produced / max(seconds, 1e-9),
                           "rows_at_once": rows_at_once}
        return [[self._to_sample(r, texts[r.prompt_index], stop) for r in group] for group in rows]

    @contextmanager
    def _copy_made(self):
        """Generate from a merged copy in ``dtype`` while inside (none when ``dtype`` is
        None); the copy is freed on exit."""
        if self.dtype is not None:
            from ucoder.models import merged_generation_copy

            self._generator_model = merged_generation_copy(self.model, COPY_DTYPES[self.dtype])
        try:
            yield
        finally:
            self._generator_model = self.model

    @contextmanager
    def _chunked_head(self):
        """The generating model's output layer as a :class:`~ucoder.output_head.ChunkedHead`
        while inside, where it can be (not for ``decode="reference"``)."""
        use = self.decode != "reference"
        with chunked_head(self._generator_model) if use else nullcontext() as head:
            self._head = head
            try:
                yield
            finally:
                self._head = None

    def _decode_all(self, encoded, rows: list[list[_Row]], rows_at_once: int, bar,
                    max_new_tokens, temperature, top_p, top_k, stop, generator) -> int:
        """Decode every row (continuous refills where the cache allows, else batch by
        batch); returns the tokens produced."""
        plan = _plan_batches(encoded, len(rows[0]) if rows else 1, rows_at_once)
        for seq, (i, j) in enumerate(pair for batch in plan for pair in batch):
            rows[i][j].seq = seq
        if self.decode == "continuous" and self._joinable():
            from ucoder.continuous import ContinuousDecoder

            decoder = ContinuousDecoder(self, encoded, max_new_tokens, temperature, top_p,
                                        top_k, stop, generator, bar, rows_at_once)
            self._sharing = self._shares_prompts()
            with attention_of(self._generator_model) if self._sharing else nullcontext():
                try:
                    return decoder.run([rows[i][j] for batch in plan for i, j in batch])
                finally:
                    self._sharing = False
        return sum(self._decode_batch(encoded, [rows[i][j] for i, j in batch], max_new_tokens,
                                      temperature, top_p, top_k, stop, generator, bar)
                   for batch in plan)

    def _rows_at_once(self, encoded, max_new_tokens: int) -> int:
        """``batch_size``, or fewer where the longest prompt + ``max_new_tokens`` rows
        would overflow the KV-cache budget."""
        per_row = kv_bytes_per_token(self._generator_model) * (
            max(len(e) for e in encoded) + max_new_tokens)
        fit = kv_budget_bytes(self._generator_model, self.kv_cache_gib) // per_row
        return int(max(1, min(self.batch_size, fit)))

    def _decode_batch(self, encoded, rows: list[_Row], max_new_tokens, temperature, top_p, top_k,
                      stop, generator, bar) -> int:
        """Prefill the batch's distinct prompts once, fan out, decode until all rows end."""
        fast = self.decode != "reference"
        logits, cache, mask, next_pos = self._prefill(encoded, rows, max_new_tokens)
        active, produced = list(rows), 0
        choose = self._chooser(temperature, top_p, top_k, generator, fast)
        while True:  # every row ends by max_new_tokens (see _advance)
            token, logprob = choose(logits, active)
            keep = self._advance(active, token.tolist(), logprob.tolist(), stop,
                                 max_new_tokens, bar)
            produced += len(active)
            if not keep:
                return produced
            logits, mask, next_pos, order = self._step(cache, token, mask, next_pos, keep,
                                                       len(active))
            active = [active[k] for k in order]

    def _prefill(self, encoded, rows: list[_Row], max_new_tokens: int):
        """Prefill the rows' distinct prompts once and fan out to the rows:
        ``(logits, cache, mask, next_pos)``, one row each."""
        device = _device_of(self.model)
        prompt_ids = sorted({r.prompt_index for r in rows})
        seqs = [encoded[i] for i in prompt_ids]
        width = max(len(s) for s in seqs)
        if self._sharing:
            cache = SharedPromptCache(self.model, max_new_tokens)
        elif self.decode == "reference":
            cache = _new_cache(self.model)
        else:
            cache = preallocated_cache(self.model, width + max_new_tokens)
        head = self._prefill_head(seqs, cache, device) if self._sharing else 0
        input_ids, tail_mask = _left_pad([s[head:] for s in seqs], self.tokenizer.pad_token_id)
        mask = torch.cat([tail_mask.new_ones(len(seqs), head), tail_mask], dim=1).to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
        logits = self._forward(input_ids.to(device), mask, positions, cache)
        # Fan out: row r continues prompt prompt_ids.index(r.prompt_index).
        slot = {p: k for k, p in enumerate(prompt_ids)}
        fan = torch.tensor([slot[r.prompt_index] for r in rows], device=device)
        if self._sharing:  # the rows' own tokens start empty; the prompt stays shared
            cache.fan_out(fan, mask)
            return logits[fan], cache, mask.new_zeros(len(rows), 0), mask[fan].sum(-1, keepdim=True)
        _select_rows(cache, fan)
        mask = mask[fan]
        return logits[fan], cache, mask, mask.sum(-1, keepdim=True)

    def _prefill_head(self, seqs: list[list[int]], cache, device) -> int:
        """Prefill the tokens all ``seqs`` start with (a chat template's system turn, a
        stage's instructions) once, copied to every prompt; returns how many."""
        head = common_prefix_length(seqs)
        if len(seqs) < 2 or head < MIN_COMMON_PREFIX:
            return 0
        ids = torch.tensor([seqs[0][:head]], device=device)
        self._forward(ids, torch.ones_like(ids), torch.arange(head, device=device)[None], cache)
        _select_rows(cache, torch.zeros(len(seqs), dtype=torch.long, device=device))
        return head

    def _advance(self, rows: list[_Row], tokens: list[int], logprobs: list[float], stop,
                 max_new_tokens: int, bar) -> list[int]:
        """Append each row's new token, mark the rows that end (EOS, stop string, length)
        and return the indices of those that go on."""
        keep = []
        for k, (row, tok, lp) in enumerate(zip(rows, tokens, logprobs)):
            row.tokens.append(tok)
            row.logprobs.append(lp)
            row.finish = self._finished(row, stop)
            if row.finish is None and len(row.tokens) >= max_new_tokens:
                row.finish = "length"
            if row.finish is None:
                keep.append(k)
            else:
                bar.update(1)
        return keep

    @staticmethod
    def _chooser(temperature, top_p, top_k, generator, fast: bool = True):
        """``choose(logits, active) -> (token, logprob)``, drawing the rows in plan order,
        so that a seed draws the same tokens whatever order the cache keeps its rows in.
        The fast paths overwrite ``logits`` (see :func:`ucoder.decoding.pick`)."""
        def choose(logits, active: list[_Row]):
            order = sorted(range(len(active)), key=lambda k: active[k].seq)
            drawn = None if order == list(range(len(active))) else torch.tensor(order)
            return _pick(logits.float(), temperature, top_p, top_k, generator, fast, drawn)
        return choose

    def _step(self, cache, token, mask, next_pos, keep: list[int], active: int):
        """Drop the rows that ended, feed the others' tokens:
        ``(logits, mask, next_pos, order)``; ``order[k]`` is the index, before the step,
        of the row now in place ``k``."""
        order = keep
        if len(keep) < active:
            order = _drop_rows(cache, keep, active, token.device)
            idx = torch.tensor(order, device=token.device)
            token, mask, next_pos = token[idx], mask[idx], next_pos[idx]
        mask = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=-1)
        # The last step's logits have been drawn from: this step may overwrite them.
        with self._head.reusing() if self._head is not None else nullcontext():
            logits = self._forward(token.unsqueeze(-1), mask, next_pos, cache)
        return logits, mask, next_pos + 1, order

    def _joinable(self) -> bool:
        """Whether this model's KV cache can take new rows mid-decode (continuous path)."""
        from ucoder.continuous import joinable

        return joinable(preallocated_cache(self.model, 1))

    def _shares_prompts(self) -> bool:
        """Whether this call's continuous decoding keeps prompts shared (see __init__)."""
        wanted = self.share_prompts
        if wanted is None:
            wanted = _device_of(self._generator_model).type == "cpu"
        return wanted and shareable(self._generator_model)

    def _forward(self, input_ids, mask, positions, cache):
        """The model's logits at the last position, one row per sequence."""
        extra = {"shared_prompts": cache} if isinstance(cache, SharedPromptCache) else {}
        out = self._generator_model(input_ids=input_ids, attention_mask=mask,
                                    position_ids=positions, use_cache=True,
                                    logits_to_keep=last_logits_only(input_ids),
                                    **{self._cache_kw: cache},
                                    **extra)
        return out.logits[:, -1, :]

    def _finished(self, row: _Row, stop: list[str]) -> str | None:
        if row.tokens[-1] in self.eos_ids:
            row.tokens.pop()  # the EOS token ends the sample; it is not part of the text
            row.logprobs.pop()
            return "eos"
        if stop:
            # Only the tail can complete a new stop string; decode just that much.
            tail = self.tokenizer.decode(row.tokens[-_TAIL:], skip_special_tokens=False)
            if any(s in tail for s in stop):
                return "stop"
        return None

    def _to_sample(self, row: _Row, prompt_text: str, stop: Sequence[str]) -> Sample:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if stop:
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        total = float(sum(row.logprobs))
        count = len(row.tokens)
        return Sample(text=text, token_ids=list(row.tokens), sum_logprob=total,
                      mean_logprob=total / count if count else 0.0, num_tokens=count,
                      finish_reason=row.finish or "length", prompt_index=row.prompt_index,
                      sample_index=row.sample_index, prompt_text=prompt_text)


_TAIL = 12  # tokens decoded to look for a stop string (stop strings are short)
