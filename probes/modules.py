"""Linear and MLP correctness probes as LightningModules.

The network is a plain ``nn.Module`` (:class:`ProbeHead`: feature normalisation + a
linear or MLP head); the LightningModules only add the class-balanced BCE loss, the
optimizer and one torchmetrics collection per stage (``train/auroc``, ``val/auroc``, ...).
A probe carries what it needs to be used again: its normalisation statistics (buffers)
and ``meta`` (layer, token position, base model), saved by :mod:`ucoder.probes.io`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryCalibrationError,
)


class ProbeHead(nn.Module):
    """Standardise features with stored statistics, then a linear layer or a small MLP."""

    def __init__(self, hidden_size: int, width: int = 0, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(hidden_size))
        self.register_buffer("feature_std", torch.ones(hidden_size))
        if width > 0:
            self.net = nn.Sequential(
                nn.Linear(hidden_size, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, 1)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, 1))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.feature_mean) / self.feature_std).squeeze(-1)


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "auroc": BinaryAUROC(),
            "ap": BinaryAveragePrecision(),
            "ece": BinaryCalibrationError(n_bins=10),
            "acc": BinaryAccuracy(),
        },
        prefix=prefix,
    )


class ProbeModule(L.LightningModule):
    """Shared loss, metrics and optimizer; subclasses only choose the head."""

    kind = ""

    def __init__(self, head: ProbeHead, lr: float, weight_decay: float):
        super().__init__()
        self.head = head
        self.lr, self.weight_decay = lr, weight_decay
        # n_negative / n_positive of the training set; set by the trainer helper.
        self.register_buffer("pos_weight", torch.ones(()))
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")
        self.test_metrics = _metrics("test/")
        self.meta: dict[str, Any] = {}

    @property
    def hidden_size(self) -> int:
        return self.head.feature_mean.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N]`` for features ``[N, H]``."""
        return self.head(x)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[N]`` that each row is correct (eval mode, CPU float32)."""
        if features.ndim == 3 and features.shape[1] == 1:
            features = features[:, 0]
        if features.ndim != 2 or features.shape[1] != self.hidden_size:
            raise ValueError(
                f"features: expected shape [N, {self.hidden_size}] for this probe, "
                f"got {list(features.shape)}"
            )
        was_training = self.training
        self.eval()
        try:
            x = features.to(self.head.feature_mean.device, torch.float32)
            return torch.sigmoid(self(x)).float().cpu()
        finally:
            self.train(was_training)

    def _step(self, batch, metrics: MetricCollection, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, y.float(), pos_weight=self.pos_weight
        )
        metrics.update(torch.sigmoid(logits.detach()), y.long())
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, self.test_metrics, "test")

    def _log_metrics(self, metrics: MetricCollection) -> None:
        self.log_dict(metrics.compute())
        metrics.reset()

    def on_train_epoch_end(self):
        self._log_metrics(self.train_metrics)

    def on_validation_epoch_end(self):
        self._log_metrics(self.val_metrics)

    def on_test_epoch_end(self):
        self._log_metrics(self.test_metrics)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class LinearProbe(ProbeModule):
    """Logistic regression on standardised hidden states.

    Args:
        hidden_size: feature width (the model's hidden size).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (the L2 regularisation of the probe).
        dropout: dropout on the input features.
    """

    kind = "linear"

    def __init__(
        self, hidden_size: int, lr: float = 1e-2, weight_decay: float = 1e-2, dropout: float = 0.0
    ):
        super().__init__(ProbeHead(hidden_size, 0, dropout), lr, weight_decay)
        self.save_hyperparameters()


class MLPProbe(ProbeModule):
    """One hidden layer (GELU, dropout) on standardised hidden states.

    Args:
        hidden_size: feature width (the model's hidden size).
        width: units in the hidden layer.
        dropout: dropout after the hidden layer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    kind = "mlp"

    def __init__(
        self,
        hidden_size: int,
        width: int = 128,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
    ):
        super().__init__(ProbeHead(hidden_size, width, dropout), lr, weight_decay)
        self.save_hyperparameters()


PROBE_KINDS: dict[str, type[ProbeModule]] = {"linear": LinearProbe, "mlp": MLPProbe}


def build_probe(kind: str, hidden_size: int, **hparams: Any) -> ProbeModule:
    """A fresh probe of ``kind`` (``linear`` or ``mlp``) for features of ``hidden_size``."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(PROBE_KINDS)}")
    return PROBE_KINDS[kind](hidden_size, **hparams)
