"""The SFT DataModule: selected (prompt, completion) pairs -> masked, length-grouped batches.

Each line of the training JSONL is ``{"prompt": str, "completion": str, ...}`` (other
fields are ignored). ``format="chat"`` renders the prompt as the user turn and the
completion as the assistant turn with the tokenizer's chat template; ``format="plain"``
trains on ``prompt + completion + eos``. Either way the loss is on the completion only:
prompt positions get the label ``-100``.

Batches are formed once per dataset, deterministically (the same on every rank):
examples are sorted by length inside shuffled windows of ``50 * batch_size`` and cut
into batches of ``batch_size``, so a batch pads to a length close to its own examples.
With ``pack=True`` a batch is one padding-free row: its examples are concatenated and
``position_ids`` restart at 0 for each, which transformers turns into a block-diagonal
causal mask (no attention across examples). The DataLoader then shuffles whole batches,
so Lightning's DistributedSampler shards batches across DDP ranks.

The tokenizer comes from the model: ``setup`` takes ``trainer.lightning_module.tokenizer``
unless one was given with :meth:`SFTDataModule.set_tokenizer` (use that outside a Trainer).

Length rule: an example whose prompt leaves no room for a completion token within
``max_length`` is dropped; a longer completion is cut at ``max_length`` (or the example
is dropped when ``overlong="drop"``). Both are counted and logged.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ucoder.jsonl import JsonlError, iter_jsonl

log = logging.getLogger(__name__)
IGNORE = -100


class SFTDataError(ValueError):
    """The SFT data cannot be used; the message names the file, the line and the fix."""


@dataclass
class Example:
    """One tokenized pair: ``input_ids`` and ``labels`` (``-100`` on the prompt)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenizeStats:
    """What the length rule did to a file."""

    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    dropped_lines: list[int] = field(default_factory=list)


def read_pairs(path: str | Path) -> list[tuple[int, str, str]]:
    """Read ``(line_number, prompt, completion)`` from a selected-pairs JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"train/val file {str(path)!r} does not exist")
    pairs = []
    for lineno, row in iter_jsonl(path):
        if isinstance(row, JsonlError):
            raise SFTDataError(str(row)) from row
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise SFTDataError(f"{path}:{lineno}: field {key!r} must be a string, got "
                                   f"{type(row.get(key)).__name__}; expected "
                                   '{"prompt": str, "completion": str}')
        if not row["completion"].strip():
            raise SFTDataError(f"{path}:{lineno}: 'completion' is empty; nothing to learn")
        pairs.append((lineno, row["prompt"], row["completion"]))
    if not pairs:
        raise SFTDataError(f"{path} has no examples (the file is empty)")
    return pairs


def _chat_ids(tokenizer, prompt: str, completion: str, system_prompt: str | None,
              prefix: str = "", suffix: str = ""):
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    head = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                         tokenize=False) + prefix
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": prefix + completion + suffix}],
        tokenize=False)
    # Tokenize the rendered text without adding special tokens again (the template has them).
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    full_ids = tokenizer(full, add_special_tokens=False).input_ids
    # Loss starts where the two tokenizations diverge: normally right after the header.
    n = 0
    while n < min(len(head_ids), len(full_ids)) and head_ids[n] == full_ids[n]:
        n += 1
    return full_ids[:n], full_ids[n:]


def _plain_ids(tokenizer, prompt: str, completion: str, prefix: str = "", suffix: str = ""):
    head = tokenizer(prompt + prefix).input_ids  # adds BOS where the tokenizer does
    tail = tokenizer(completion + suffix, add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        tail.append(tokenizer.eos_token_id)
    return head, tail


def tokenize_pairs(pairs, tokenizer, *, format: str = "chat", max_length: int = 1024,
                   overlong: str = "truncate", system_prompt: str | None = None,
                   answer_prefix: str = "", answer_suffix: str = ""):
    """Tokenize pairs and apply the length rule; return ``(examples, TokenizeStats)``.

    ``answer_prefix`` joins the context (no loss), as the Sampler's ``prefix`` does when
    it prefills the answer: with the generation stages' prefix and the closing text of
    their stop string, the model trains in exactly the context it samples in.
    """
    stats, examples = TokenizeStats(), []
    for lineno, prompt, completion in pairs:
        if format == "chat":
            head, tail = _chat_ids(tokenizer, prompt, completion, system_prompt,
                                   answer_prefix, answer_suffix)
        else:
            head, tail = _plain_ids(tokenizer, prompt, completion, answer_prefix,
                                    answer_suffix)
        if len(head) + len(tail) > max_length:
            if len(head) >= max_length or overlong == "drop":
                stats.dropped += 1
                stats.dropped_lines.append(lineno)
                continue
            tail = tail[: max_length - len(head)]
            stats.truncated += 1
        ids = head + tail
        labels = [IGNORE] * len(head) + tail
        labels[0] = IGNORE  # never learn across an example boundary when packed
        examples.append(Example(ids, labels))
        stats.kept += 1
    return examples, stats


def group_batches(lengths: list[int], batch_size: int, *, group_by_length: bool = True,
                  seed: int = 0) -> list[list[int]]:
    """Split indices into batches; with grouping, similar lengths share a batch.

    Deterministic for a given seed, so every DDP rank computes the same batches.
    """
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    if group_by_length:
        window = 50 * batch_size
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda i: -lengths[i])]
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def collate(examples: list[Example], pad_id: int, *, pack: bool = False) -> dict:
    """Build a batch dict: ``input_ids``, ``labels``, and ``attention_mask`` or packed
    ``position_ids`` (one row, positions restarting per example, no padding)."""
    if pack:
        ids = [t for e in examples for t in e.input_ids]
        labels = [t for e in examples for t in e.labels]
        pos = [p for e in examples for p in range(len(e.input_ids))]
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([pos])}
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class BatchDataset(Dataset):
    """A dataset whose items are whole, pre-grouped batches (collated on access)."""

    def __init__(self, examples: list[Example], batches: list[list[int]], pad_id: int,
                 pack: bool):
        self.examples, self.batches, self.pad_id, self.pack = examples, batches, pad_id, pack

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return collate([self.examples[j] for j in self.batches[i]], self.pad_id, pack=self.pack)


class SFTDataModule(L.LightningDataModule):
    """Selected-pairs JSONL -> masked, length-grouped (or packed) SFT batches.

    Args:
        train_file: JSONL of ``{"prompt", "completion"}``; may be set later with
            :meth:`set_train_file` (the regenerate callback does, between rounds).
        val_file: optional validation JSONL in the same format.
        max_length: longest example in tokens (see the length rule in the module doc).
        batch_size: examples per batch (per device).
        format: ``chat`` (tokenizer chat template) or ``plain`` (prompt + completion).
        system_prompt: optional system turn for the chat format.
        answer_prefix: text after the prompt that is context, not target (the answer
            prefix the generation stages prefill, e.g. ``"```python\n"``).
        answer_suffix: text trained after each completion (e.g. ``"\n```"``, the end
            of the fence that stops sampling).
        overlong: ``truncate`` the completion or ``drop`` the example when too long.
        group_by_length: batch examples of similar length together (less padding).
        pack: concatenate each batch into one padding-free row (per-example positions).
        seed: seed of the batch grouping and order.
        num_workers: DataLoader workers (0: collate in the training process).
    """

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        max_length: int = 1024,
        batch_size: int = 8,
        format: Literal["chat", "plain"] = "chat",
        system_prompt: str | None = None,
        answer_prefix: str = "",
        answer_suffix: str = "",
        overlong: Literal["truncate", "drop"] = "truncate",
        group_by_length: bool = True,
        pack: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise SFTDataError(f"{name}={value!r} is not allowed: expected an integer >= 1")
        if format not in ("chat", "plain"):
            raise SFTDataError(f"format={format!r} is not allowed: expected 'chat' or 'plain'")
        if overlong not in ("truncate", "drop"):
            raise SFTDataError(f"overlong={overlong!r} is not allowed: 'truncate' or 'drop'")
        self.save_hyperparameters()
        self.train_file, self.val_file = train_file, val_file
        self.tokenizer = None
        self.stats: dict[str, TokenizeStats] = {}
        self._cache: dict[str, tuple[str, BatchDataset]] = {}

    # -- wiring -------------------------------------------------------------------------
    def set_tokenizer(self, tokenizer) -> None:
        """Use ``tokenizer`` (otherwise ``setup`` takes the LightningModule's)."""
        self.tokenizer = tokenizer

    def set_train_file(self, path: str | Path) -> None:
        """Train on ``path`` from the next ``train_dataloader()`` call on.

        With ``Trainer(reload_dataloaders_every_n_epochs=1)`` that is the next epoch.
        """
        self.train_file = str(path)
        self._cache.pop("train", None)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
            self.tokenizer = getattr(module, "tokenizer", None)
        if self.tokenizer is None:
            raise SFTDataError("SFTDataModule has no tokenizer: run it in a Trainer with a "
                               "module that has .tokenizer, or call set_tokenizer(tok)")
        # Read what exists now so bad data fails before the model loads.
        if self.train_file is not None and stage in (None, "fit"):
            self._dataset("train")
        if self.val_file is not None and stage in (None, "fit", "validate"):
            self._dataset("val")

    # -- datasets -----------------------------------------------------------------------
    def _dataset(self, split: str) -> BatchDataset:
        path = self.train_file if split == "train" else self.val_file
        if path is None:
            raise SFTDataError(f"no {split}_file set: give data.{split}_file in the config or "
                               "call set_train_file() before training")
        cached = self._cache.get(split)
        if cached is not None and cached[0] == path:
            return cached[1]
        hp = self.hparams
        examples, stats = tokenize_pairs(
            read_pairs(path), self.tokenizer, format=hp.format, max_length=hp.max_length,
            overlong=hp.overlong, system_prompt=hp.system_prompt,
            answer_prefix=hp.answer_prefix, answer_suffix=hp.answer_suffix)
        if stats.truncated or stats.dropped:
            log.warning("%s: %d examples kept, %d truncated, %d dropped (prompt too long for "
                        "max_length=%d; lines %s)", path, stats.kept, stats.truncated,
                        stats.dropped, hp.max_length, stats.dropped_lines[:10])
        if not examples:
            raise SFTDataError(f"{path}: every example was dropped by max_length="
                               f"{hp.max_length}; raise max_length")
        batches = group_batches([len(e.input_ids) for e in examples], hp.batch_size,
                                group_by_length=hp.group_by_length or hp.pack, seed=hp.seed)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        ds = BatchDataset(examples, batches, pad, hp.pack)
        self.stats[split] = stats
        self._cache[split] = (path, ds)
        return ds

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # batch_size=None: items are already batches; the sampler orders (and shards) them.
        return DataLoader(self._dataset(split), batch_size=None, shuffle=shuffle,
                          num_workers=self.hparams.num_workers,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.val_file else []

    def state_dict(self) -> dict:
        return {"train_file": self.train_file}

    def load_state_dict(self, state: dict) -> None:
        if state.get("train_file"):
            self.set_train_file(state["train_file"])
