"""Fit one probe with a quiet Lightning Trainer and measure it.

:func:`fit_probe` splits the rows by problem, standardises features with statistics of
the training rows, trains with class-balanced BCE, keeps the weights of the epoch with
the lowest validation loss (early stopping) and returns the probe with its validation
metrics. Nothing is written to disk and the caller's random state is left untouched.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
)

from ucoder.probes.data import ProbeDataModule
from ucoder.probes.modules import ProbeModule, build_probe

_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


@contextmanager
def _quiet():
    """Silence Lightning's banner, hints about workers/logging intervals, and its logs."""
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\..*")
            warnings.filterwarnings("ignore", module=r"torchmetrics\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _KeepBest(Callback):
    """Remember the weights of the epoch with the lowest ``val/loss`` (in memory)."""

    def __init__(self):
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = -1

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics.get("val/loss", math.inf))
        if loss < self.best:
            self.best, self.epoch = loss, trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())


def evaluate_probe(
    probe: ProbeModule, features: torch.Tensor, labels: Sequence[bool] | torch.Tensor
) -> dict[str, float]:
    """AUROC, average precision, calibration error and accuracy of ``probe`` on rows.

    AUROC and AP are ``nan`` when the rows hold only one class.
    """
    y = torch.as_tensor(np.asarray(labels, dtype=bool)).long()
    p = probe.predict_proba(features)
    return binary_metrics(p, y)


def binary_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUROC/AP (``nan`` for a single class) for any scores; ECE/accuracy if in [0, 1]."""
    y = torch.as_tensor(labels).long()
    s = torch.as_tensor(scores).float()
    both = 0 < int(y.sum()) < len(y)
    # torchmetrics squashes scores outside [0, 1] with a sigmoid, which saturates large
    # values (lengths, sums) into ties; ranks keep the order and the ties exactly.
    _, ranks = torch.unique(s, return_inverse=True)
    r = ranks.float() / max(int(ranks.max()) if len(s) else 1, 1)
    out = {
        "auroc": float(binary_auroc(r, y)) if both else math.nan,
        "ap": float(binary_average_precision(r, y)) if both else math.nan,
    }
    if len(s) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0:
        out["ece"] = float(binary_calibration_error(s, y, n_bins=10))
        out["acc"] = float(binary_accuracy(s, y))
    return out


def fit_probe(
    features: torch.Tensor,
    labels: Sequence[bool] | torch.Tensor,
    groups: Sequence,
    kind: str = "linear",
    max_epochs: int = 100,
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    patience: int = 10,
    batch_size: int = 64,
    train_index: Sequence[int] | None = None,
    val_index: Sequence[int] | None = None,
    layer: int = -1,
    position: str = "last_completion",
    meta: dict[str, Any] | None = None,
    **hparams: Any,
) -> tuple[ProbeModule, dict[str, float]]:
    """Train a probe on features ``[N, H]`` to predict ``labels`` (split by ``groups``).

    Args:
        features: ``[N, H]`` (or ``[N, 1, H]``) hidden states from :func:`extract_features`.
        labels: ``[N]`` booleans (True = correct / in the consensus cluster).
        groups: ``[N]`` problem ids; no problem is on both sides of the split.
        kind: ``linear`` or ``mlp``.
        max_epochs: upper bound on epochs; early stopping on ``val/loss`` ends sooner.
        seed: seed of the split, the initialisation and the shuffling.
        val_fraction: share of problems held out (0: train on all, no early stopping).
        patience: epochs without a better ``val/loss`` before stopping.
        train_index / val_index: explicit split instead of a random grouped one.
        layer / position: recorded in ``probe.meta`` so a scorer reads the same state.
        meta: further metadata to record (e.g. ``base_model``).
        **hparams: passed to the probe (``lr``, ``weight_decay``, ``width``, ``dropout``).

    Returns:
        ``(probe, metrics)``: the probe in eval mode with its normalisation set, and
        ``val/auroc``, ``val/ap``, ``val/ece``, ``val/acc``, ``val/loss``, ``best_epoch``,
        ``n_train``, ``n_val``, ``n_train_pos``, ``n_val_pos`` (``train/...`` when no val).
    """
    dm = ProbeDataModule(
        features, labels, groups, val_fraction, batch_size, seed, train_index, val_index
    )
    if int(dm.labels[torch.as_tensor(dm.train_index)].sum()) == 0:
        warnings.warn("fit_probe: the training rows hold no positive label", stacklevel=2)
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        probe = build_probe(kind, dm.features.shape[1], **hparams)
        probe.head.set_normalization(*dm.normalization())
        probe.pos_weight.fill_(dm.pos_weight())
        keep = _train(probe, dm, max_epochs, patience)
    if keep.state is not None:
        probe.load_state_dict(keep.state)
    probe.eval()
    probe.meta = {"kind": kind, "layer": layer, "position": position, **(meta or {})}
    return probe, _report(probe, dm, keep)


@contextmanager
def _one_thread():
    """Probe steps are tiny matrix products: extra threads only add sync overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(probe: ProbeModule, dm: ProbeDataModule, max_epochs: int, patience: int
           ) -> _KeepBest:
    """Fit on CPU with a quiet Trainer, early stopping on ``val/loss`` when rows are held out."""
    keep = _KeepBest()
    callbacks: list[Callback] = [keep]
    if dm.has_val and patience > 0:
        callbacks.append(EarlyStopping("val/loss", patience=patience, mode="min"))
    with _quiet():
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=1.0 if dm.has_val else 0,
            callbacks=callbacks, deterministic=False,
        )  # fmt: skip
        trainer.fit(probe, datamodule=dm)
    return keep


def _report(probe: ProbeModule, dm: ProbeDataModule, keep: _KeepBest) -> dict[str, float]:
    index = dm.val_index if dm.has_val else dm.train_index
    prefix = "val/" if dm.has_val else "train/"
    idx = torch.as_tensor(index)
    x, y = dm.features[idx], dm.labels[idx]
    metrics = {prefix + k: v for k, v in evaluate_probe(probe, x, y).items()}
    with torch.no_grad():
        metrics[prefix + "loss"] = float(
            torch.nn.functional.binary_cross_entropy_with_logits(
                probe(x), y.float(), pos_weight=probe.pos_weight
            )
        )
    train_y = dm.labels[torch.as_tensor(dm.train_index)]
    metrics.update(
        best_epoch=float(keep.epoch),
        n_train=float(len(dm.train_index)),
        n_val=float(len(dm.val_index)),
        n_train_pos=float(train_y.sum()),
        n_val_pos=float(dm.labels[torch.as_tensor(dm.val_index)].sum()) if dm.has_val else 0.0,
    )
    return metrics
