"""UCoderModule: QLoRA (or bf16/fp32 LoRA) supervised fine-tuning as a LightningModule.

The model is loaded in :meth:`UCoderModule.configure_model`, which Lightning calls on
every rank after the process group exists, so under DDP each rank loads its own 4-bit
copy on its own device; only the LoRA weights are trainable, so only they are
all-reduced. The tokenizer is loaded in ``__init__`` (it is cheap) so the DataModule can
use it before the model exists.

The loss is computed on completion tokens only, and the vocabulary projection runs only
at those positions: the backbone returns hidden states and ``lm_head`` sees just the rows
whose next token has a label (optionally in chunks that are recomputed in backward), so
no ``batch x length x vocab`` logits tensor is ever built for the prompt.

Checkpoints stay small: ``on_save_checkpoint`` keeps only trainable parameters and
``strict_loading = False`` lets Lightning load them back into a freshly loaded base model.
At the end of every training epoch a PEFT adapter directory is written to
``<adapter_dir or default_root_dir/adapters>/epoch_<k>/`` (``PeftModel.from_pretrained``
loads it).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ucoder.atomic import atomic_directory
from ucoder.data import IGNORE
from ucoder.models import (
    EMBEDDED_MODEL,
    FourBitOptions,
    LoraOptions,
    add_lora,
    load_model,
    load_tokenizer,
    restore_training_layout,
)

log = logging.getLogger(__name__)


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str = "cosine",
              min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer ``step``: linear warmup, then decay to
    ``min_ratio`` at ``total`` (and flat after it)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def completion_loss(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module,
                    chunk_size: int | None = None) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, projecting only those.

    Args:
        hidden: ``(batch, length, dim)`` final hidden states.
        labels: ``(batch, length)`` token ids, ``-100`` where no loss is taken.
        head: the output projection (``lm_head``).
        chunk_size: project at most this many rows at once and recompute them in backward
            (``None``: all at once; saves the ``rows x vocab`` logits memory when set).

    Returns:
        ``(loss, number_of_target_tokens)``.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = hidden[:, :-1][keep]
    targets = targets[keep]
    n = targets.numel()
    if n == 0:
        return hidden.sum() * 0.0, 0  # keeps the graph (DDP needs every rank to backward)

    def piece(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    if chunk_size is None or n <= chunk_size:
        return piece(rows, targets) / n, n
    total = sum(checkpoint(piece, rows[s:s + chunk_size], targets[s:s + chunk_size],
                           use_reentrant=False) for s in range(0, n, chunk_size))
    return total / n, n


class UCoderModule(L.LightningModule):
    """QLoRA SFT of a causal LM on (prompt, completion) batches from ``SFTDataModule``.

    Args:
        model: Hugging Face id, local directory or ``embedded:smollm2-135m-instruct``.
        load_in_4bit: quantize the frozen base with bitsandbytes (QLoRA); False: LoRA on
            a ``dtype`` base.
        quant: 4-bit options (NF4, double quantization, compute dtype).
        lora: LoRA options (rank, alpha, dropout, target modules).
        dtype: dtype of the non-quantized weights (``auto``: bf16 on GPU, fp32 on CPU).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: warmup as a share of the total optimizer steps.
        warmup_steps: warmup in steps (overrides ``warmup_ratio`` when set).
        schedule: ``cosine``, ``linear`` or ``constant`` after warmup.
        min_lr_ratio: the decayed learning rate as a share of ``lr``.
        optimizer: ``auto`` (paged 8-bit AdamW on CUDA, torch AdamW elsewhere),
            ``adamw``, ``paged_adamw_8bit`` or ``adamw_8bit``.
        gradient_checkpointing: recompute activations in backward (less memory).
        loss_chunk_size: rows of the vocabulary projection per chunk (None: no chunking).
        adapter_dir: where per-epoch adapters go (None: ``<default_root_dir>/adapters``;
            ``""``: do not write them).
        num_threads: torch CPU threads (None: leave torch's/Lightning's choice).
        trust_remote_code: passed to transformers.
    """

    def __init__(
        self,
        model: str = EMBEDDED_MODEL,
        load_in_4bit: bool = True,
        quant: FourBitOptions = FourBitOptions(),  # noqa: B008 - copied below
        lora: LoraOptions = LoraOptions(),  # noqa: B008
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        warmup_steps: int | None = None,
        schedule: Literal["cosine", "linear", "constant"] = "cosine",
        min_lr_ratio: float = 0.0,
        optimizer: Literal["auto", "adamw", "paged_adamw_8bit", "adamw_8bit"] = "auto",
        gradient_checkpointing: bool = False,
        loss_chunk_size: int | None = None,
        adapter_dir: str | None = None,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr={lr!r} is not allowed: expected a positive float")
        if not 0 <= warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={warmup_ratio!r} is not allowed: expected [0, 1)")
        if loss_chunk_size is not None and loss_chunk_size < 1:
            raise ValueError(f"loss_chunk_size={loss_chunk_size!r}: expected None or >= 1")
        # Dicts (from load_from_checkpoint) become options again; copies, since the
        # defaults are shared objects.
        self.quant = FourBitOptions(**quant) if isinstance(quant, dict) else replace(quant)
        self.lora = LoraOptions(**lora) if isinstance(lora, dict) else replace(lora)
        # Plain values only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["quant", "lora"])
        self.hparams.update(quant=asdict(self.quant), lora=asdict(self.lora))
        self.model_name = model
        self.tokenizer = load_tokenizer(model, trust_remote_code)
        self.model = None
        self.strict_loading = False  # checkpoints hold only the LoRA weights
        # Throughput counts this process's training steps only: not a resumed total, and
        # not the rounds and evaluations that run in the epoch hooks between them.
        self._step_start: float | None = None
        self._train_seconds = 0.0
        self._run_tokens = 0
        self.tokens_seen = 0
        self._total: int | None = None  # schedule length, sized per epoch's data
        self._warmup: int | None = None

    # -- model ----------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Load the (4-bit) base and add LoRA on this rank's device (once)."""
        if self.model is not None:
            return
        hp = self.hparams
        if hp.num_threads:
            torch.set_num_threads(hp.num_threads)
        # The rank's device: the module itself is still on CPU when this hook runs.
        root = self.trainer.strategy.root_device if self._trainer is not None else self.device
        device = "cpu" if root.type == "cpu" else str(root)
        base, _ = load_model(self.model_name, load_in_4bit=hp.load_in_4bit, quant=self.quant,
                             device=device, dtype=hp.dtype,
                             trust_remote_code=hp.trust_remote_code)
        base.config.use_cache = False
        self.model = add_lora(base, self.lora, quantized=hp.load_in_4bit,
                              gradient_checkpointing=hp.gradient_checkpointing)
        if hp.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        self.model.train()  # from_pretrained returns eval mode; LoRA dropout needs train
        # DDP should neither broadcast nor reduce the frozen (quantized) base: only LoRA.
        self._ddp_params_and_buffers_to_ignore = [
            n for n, p in self.named_parameters() if not p.requires_grad
        ] + [n for n, _ in self.named_buffers()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable (LoRA) parameters under their LightningModule state-dict names."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None):
        """Return ``(loss, n_target_tokens)`` for a batch from ``SFTDataModule``."""
        causal = self.model.get_base_model()
        backbone, head = causal.get_decoder(), causal.get_output_embeddings()
        if backbone is None or head is None or labels is None:  # unusual architectures
            out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, labels=labels)
            return out.loss, int((labels[:, 1:] != IGNORE).sum()) if labels is not None else 0
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=False).last_hidden_state
        return completion_loss(hidden, labels, head, self.hparams.loss_chunk_size)

    # -- steps ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.hparams.load_in_4bit:  # after a round or an evaluation generated with it
            restore_training_layout(self.model)
        self._step_start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        loss, _ = self(**batch)
        tokens = int(batch["input_ids"].numel() if "attention_mask" not in batch
                     else batch["attention_mask"].sum())
        self.tokens_seen += tokens
        self._run_tokens += tokens
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # After the optimizer step (it runs inside the training step's closure).
        if self._step_start is not None:
            self._train_seconds += time.perf_counter() - self._step_start
            self._step_start = None
        if self._train_seconds > 0:
            self.log("train/tokens_per_s", self._run_tokens / self._train_seconds,
                     prog_bar=True, batch_size=batch["input_ids"].shape[0])

    def validation_step(self, batch, batch_idx):
        loss, n = self(**batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True,
                 batch_size=max(1, n))

    # -- optimization ---------------------------------------------------------------------
    def _optimizer_name(self) -> str:
        name = self.hparams.optimizer
        if name == "auto":
            return "paged_adamw_8bit" if self.device.type == "cuda" else "adamw"
        return name

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        name = self._optimizer_name()
        if name == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            import bitsandbytes as bnb

            cls = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
            opt = cls(params, lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _size_schedule(self) -> None:
        """Size the schedule for the data this epoch trains on.

        The loop swaps the training file between epochs, so the fit's length is only
        known one epoch at a time: the total is the steps done plus this epoch's steps
        times the epochs left (Lightning's ``estimated_stepping_batches`` rule applied to
        the current data), recomputed whenever an epoch starts. Warmup is fixed the first
        time, so a longer second round does not send the learning rate back into warmup.
        """
        trainer, hp = self.trainer, self.hparams
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        total = math.inf
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            total = trainer.global_step + per_epoch * (trainer.max_epochs - trainer.current_epoch)
        if trainer.max_steps is not None and trainer.max_steps >= 0:
            total = min(total, trainer.max_steps)
        if not math.isfinite(total):
            if hp.schedule != "constant" or (hp.warmup_steps is None and hp.warmup_ratio):
                raise ValueError(
                    f"model.schedule={hp.schedule!r} (warmup_ratio={hp.warmup_ratio}) needs a "
                    "known length: set trainer.max_epochs or trainer.max_steps, or use "
                    "model.schedule=constant with model.warmup_steps")
            total = trainer.global_step + per_epoch
        self._total = max(1, int(total))
        if self._warmup is None:
            self._warmup = (hp.warmup_steps if hp.warmup_steps is not None
                            else int(hp.warmup_ratio * self._total))
        self._apply_lr()

    def _apply_lr(self) -> None:
        """Set the current step's learning rate under the (re)sized schedule."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * self._lr_factor(scheduler.last_epoch)

    def on_train_start(self) -> None:
        if self._total is None:  # resumed mid-epoch: no epoch start comes before training
            self._size_schedule()

    def on_train_epoch_start(self) -> None:
        self._size_schedule()

    def _lr_factor(self, step: int) -> float:
        hp, total = self.hparams, self._total
        if total is None:  # configure_optimizers runs before any data exists
            return lr_lambda(step, warmup=hp.warmup_steps or 0, total=step + 1,
                             schedule="constant")
        return lr_lambda(step, warmup=self._warmup, total=total, schedule=hp.schedule,
                         min_ratio=hp.min_lr_ratio)

    # -- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trainable_state_dict().keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in keep}
        checkpoint["ucoder_tokens_seen"] = self.tokens_seen
        checkpoint["ucoder_schedule"] = {"total": self._total, "warmup": self._warmup}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = checkpoint.get("ucoder_tokens_seen", 0)
        schedule = checkpoint.get("ucoder_schedule") or {}
        self._total, self._warmup = schedule.get("total"), schedule.get("warmup")

    def save_adapter(self, directory: str | os.PathLike) -> Path:
        """Write the PEFT adapter (and the tokenizer) to ``directory``, atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return directory

    def on_train_epoch_end(self) -> None:
        root = self.hparams.adapter_dir
        if root == "" or self.trainer.sanity_checking:
            return
        root = root or os.path.join(self.trainer.default_root_dir, "adapters")
        if self.trainer.is_global_zero:
            path = self.save_adapter(Path(root) / f"epoch_{self.current_epoch}")
            log.info("saved adapter %s", path)
        self.trainer.strategy.barrier("ucoder_adapter_saved")
