"""Hidden states of any Hugging Face causal LM for (prompt, completion) pairs.

The prompt and the completion are tokenised separately and their ids concatenated, so
the boundary between them is exact (the same as when the model generated the completion
after the prompt) and never blurred by a BPE merge across it. A completion may also be
given as its token ids (e.g. ``Sample.token_ids`` from generation).

Rows are sorted by length and batched with the tokenizer's padding side; with left
padding the position ids are passed explicitly, so every row's features are the same as
if it had been run alone. Works on 4-bit (bitsandbytes) and PEFT-wrapped models.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import torch

Position = Literal["last_completion", "last_prompt", "mean_completion"]
POSITIONS: tuple[str, ...] = ("last_completion", "last_prompt", "mean_completion")
Completion = str | Sequence[int]


def num_hidden_layers(model) -> int:
    """Number of transformer blocks, read from the model config (any family)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the number of layers in the config of {type(model).__name__}")


def hidden_size(model) -> int:
    """Width of the hidden states, read from the model config (any family)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in the config of {type(model).__name__}")


def resolve_layers(layers: int | Sequence[int], n_layers: int) -> list[int]:
    """Map layer indices to ``hidden_states`` indices in ``[0, n_layers]``.

    Index 0 is the embedding output and ``n_layers`` (or -1) the last block's output, as
    in ``output_hidden_states``. Raises ``ValueError`` naming ``layers`` when out of range.
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not layers:
        raise ValueError("layers: give at least one layer index")
    out = []
    for layer in layers:
        if not isinstance(layer, int) or not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(
                f"layers: index {layer!r} is out of range for a model with {n_layers} layers; "
                f"allowed are {-(n_layers + 1)}..{n_layers} (0 = embeddings, -1 = last layer)"
            )
        out.append(layer % (n_layers + 1))
    return out


def _prompt_ids(tokenizer, prompt: str, add_special_tokens: bool | None) -> list[int]:
    if add_special_tokens is None:
        # Chat-templated text usually starts with the BOS token already; adding another
        # would not match what the model saw while generating.
        bos = getattr(tokenizer, "bos_token", None)
        add_special_tokens = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]


def _encode(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    add_special_tokens: bool | None = None,
):
    """Token ids per row and the number of prompt tokens per row."""
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions differ in length ({len(prompts)} vs {len(completions)})"
        )
    prompt_ids = [_prompt_ids(tokenizer, p, add_special_tokens) for p in prompts]
    texts = [c for c in completions if isinstance(c, str)]
    text_ids = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    rows = []
    for i, (p_ids, comp) in enumerate(zip(prompt_ids, completions)):
        c_ids = next(text_ids) if isinstance(comp, str) else [int(t) for t in comp]
        if not p_ids:
            raise ValueError(f"prompts[{i}] encodes to no tokens; give a non-empty prompt")
        rows.append((list(p_ids) + c_ids, len(p_ids)))
    return rows


def _input_device(model) -> torch.device:
    # With device_map="auto" the embeddings sit on the first device; inputs go there.
    return model.get_input_embeddings().weight.device


def _batch(rows, pad_id: int, left: bool, device: torch.device):
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for r, (ids, _) in enumerate(rows):
        start = width - len(ids) if left else 0
        input_ids[r, start : start + len(ids)] = torch.tensor(ids)
        mask[r, start : start + len(ids)] = 1
        offsets.append(start)
    kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
    if left:
        # Models that derive positions from an arange would shift left-padded rows.
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
    return kwargs, offsets


def _pool(states: torch.Tensor, rows, offsets: list[int], position: str) -> torch.Tensor:
    """Pick one vector per row from ``states`` [B, T, H]."""
    out = []
    for r, ((ids, n_prompt), start) in enumerate(zip(rows, offsets)):
        end = start + len(ids)  # one past the last real token
        p_end = start + n_prompt
        if position == "last_prompt" or end == p_end:
            # An empty completion has no token of its own: read the last prompt token.
            out.append(states[r, p_end - 1])
        elif position == "last_completion":
            out.append(states[r, end - 1])
        else:
            out.append(states[r, p_end:end].float().mean(0))
    return torch.stack(out).float()


def extract_features(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    layers: int | Sequence[int] = (-1,),
    position: Position = "last_completion",
    batch_size: int = 8,
    max_length: int | None = None,
    add_special_tokens: bool | None = None,
) -> torch.Tensor:
    """Hidden states at one token position for each (prompt, completion) pair.

    Args:
        model: any ``AutoModelForCausalLM`` (full precision, 4-bit or PEFT-wrapped).
        tokenizer: its tokenizer; its ``padding_side`` is honoured.
        prompts: the exact text the model saw before the completion (chat template applied).
        completions: completion texts, or their token ids.
        layers: ``hidden_states`` indices: 0 = embeddings, 1..L = blocks, -1 = last.
        position: ``last_completion``, ``last_prompt`` or ``mean_completion``.
        batch_size: rows per forward pass.
        max_length: if set, a longer row raises instead of running out of memory.
        add_special_tokens: add the tokenizer's special tokens (e.g. BOS) to the prompt;
            ``None`` adds them unless the prompt already starts with the BOS token.

    Returns:
        ``float32`` tensor ``[N, len(layers), hidden]`` on the CPU, rows in input order.
    """
    return extract_positions(model, tokenizer, prompts, completions, layers, [position],
                             batch_size, max_length, add_special_tokens)[position]


@torch.no_grad()
def extract_positions(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    layers: int | Sequence[int] = (-1,),
    positions: Sequence[Position] = ("last_completion",),
    batch_size: int = 8,
    max_length: int | None = None,
    add_special_tokens: bool | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`extract_features` at several positions from one forward pass per batch.

    Returns:
        ``{position: float32 tensor [N, len(layers), hidden]}`` (what a position/layer
        sweep reads, at the cost of one extraction).
    """
    bad = [p for p in positions if p not in POSITIONS] or ([] if positions else [positions])
    if bad:
        raise ValueError(f"position: {bad[0]!r} is not one of {', '.join(POSITIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    idx = resolve_layers(layers, num_hidden_layers(model))
    rows = _encode(tokenizer, prompts, completions, add_special_tokens)
    if max_length is not None:
        for i, (ids, _) in enumerate(rows):
            if len(ids) > max_length:
                raise ValueError(
                    f"max_length: row {i} has {len(ids)} tokens, more than {max_length}"
                )
    pad_id = tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (tokenizer.eos_token_id or 0)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    device = _input_device(model)
    out = {p: torch.empty((len(rows), len(idx), hidden_size(model)), dtype=torch.float32)
           for p in positions}
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # less padding
    skip_logits = _skip_logits_kwargs(model)
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            batch_rows = [rows[i] for i in chunk]
            kwargs, offsets = _batch(batch_rows, pad_id, left, device)
            hidden = model(**kwargs, **skip_logits, output_hidden_states=True,
                           use_cache=False).hidden_states
            for j, layer in enumerate(idx):
                for p in positions:
                    out[p][chunk, j] = _pool(hidden[layer], batch_rows, offsets, p).cpu()
    finally:
        model.train(was_training)
    return out


def _skip_logits_kwargs(model) -> dict:
    """The output layer at one position only, where the forward takes ``logits_to_keep``:
    over every position it is a fifth of a small model's FLOPs, and only hidden states are
    read. An index rather than ``1`` (see :func:`ucoder.decoding.last_logits_only`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return {"logits_to_keep": torch.tensor([0])} if "logits_to_keep" in params else {}
