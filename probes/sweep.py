"""One probe per layer; the best layer is chosen on validation data only.

Every layer's probe is trained on the same grouped split, so their validation AUROCs
are comparable; the split never touches rows the caller holds out for testing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ucoder.probes.data import grouped_split
from ucoder.probes.fit import fit_probe
from ucoder.probes.modules import ProbeModule


@dataclass
class SweepResult:
    """Per-layer probes and validation metrics, and the layer chosen by ``val/auroc``."""

    layers: list[int]
    metrics: dict[int, dict[str, float]]
    probes: dict[int, ProbeModule] = field(repr=False)
    best_layer: int

    @property
    def best_probe(self) -> ProbeModule:
        return self.probes[self.best_layer]

    def table(self) -> str:
        """A plain-text table: layer, validation AUROC and AP, best layer starred."""
        lines = ["layer  val/auroc  val/ap"]
        for layer in self.layers:
            m = self.metrics[layer]
            star = " *" if layer == self.best_layer else ""
            lines.append(
                f"{layer:>5}  {m.get('val/auroc', math.nan):9.3f}  "
                f"{m.get('val/ap', math.nan):6.3f}{star}"
            )
        return "\n".join(lines)


def _score(metrics: dict[str, float]) -> tuple[float, float]:
    auroc = metrics.get("val/auroc", math.nan)
    # nan (one class in validation) ranks last; ties go to the lower validation loss.
    return (-math.inf if math.isnan(auroc) else auroc, -metrics.get("val/loss", math.inf))


def layer_sweep(
    features: torch.Tensor,
    labels: Sequence[bool] | torch.Tensor,
    groups: Sequence,
    layers: Sequence[int] | None = None,
    kind: str = "linear",
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    **fit_kwargs: Any,
) -> SweepResult:
    """Fit a probe on each layer of ``features`` ``[N, L, H]`` and pick the best by val AUROC.

    Args:
        features: stacked features from :func:`extract_features` with several layers.
        labels / groups: as for :func:`fit_probe`.
        layers: the layer index of each slice in dim 1 (recorded in each probe's meta);
            default ``0..L-1``.
        kind: ``linear`` or ``mlp``.
        val_fraction: share of problems in the (shared) validation split; must be > 0.
        **fit_kwargs: passed to :func:`fit_probe` (``max_epochs``, ``position``, ...).
    """
    if features.ndim != 3:
        raise ValueError(f"features: expected [N, L, H], got shape {list(features.shape)}")
    layers = list(range(features.shape[1])) if layers is None else list(layers)
    if len(layers) != features.shape[1]:
        raise ValueError(
            f"layers: {len(layers)} indices given for {features.shape[1]} stored layers"
        )
    if not val_fraction > 0:
        raise ValueError("val_fraction: a layer sweep needs validation data (> 0)")
    train_index, val_index = grouped_split(groups, labels, val_fraction, seed)
    if len(val_index) == 0:
        raise ValueError("groups: too few problems to hold any out for validation")
    metrics, probes = {}, {}
    for j, layer in enumerate(layers):
        probe, m = fit_probe(
            features[:, j], labels, groups, kind, seed=seed, train_index=train_index,
            val_index=val_index, layer=layer, **fit_kwargs,
        )  # fmt: skip
        metrics[layer], probes[layer] = m, probe
    best = max(layers, key=lambda layer: _score(metrics[layer]))
    return SweepResult(layers, metrics, probes, best)
