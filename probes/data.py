"""Stored features as a LightningDataModule, split by problem.

Candidates of one problem share their prompt, so a random row split would leak the
problem into both sides and overstate the probe. Every split here is grouped: a problem's
candidates are all on one side. Splits are also stratified by whether a problem has any
positive candidate, so small validation sets still tend to contain both classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset


def _group_codes(groups: Sequence) -> tuple[np.ndarray, list]:
    names = list(dict.fromkeys(str(g) for g in groups))
    code = {g: i for i, g in enumerate(names)}
    return np.array([code[str(g)] for g in groups], dtype=np.int64), names


def _shuffled_strata(codes: np.ndarray, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Group codes split into (has a positive, has none), each shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(codes)
    has_pos = np.array([labels[codes == g].any() for g in uniq])
    return [rng.permutation(uniq[has_pos]), rng.permutation(uniq[~has_pos])]


def grouped_split(
    groups: Sequence,
    labels: Sequence[bool] | torch.Tensor,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, val)`` with no group on both sides.

    About ``val_fraction`` of the groups with a positive row and of those without go to
    validation (at least one of each stratum when it has two or more groups).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    codes, _ = _group_codes(groups)
    labels = np.asarray(labels, dtype=bool)
    val_groups: list[int] = []
    for stratum in _shuffled_strata(codes, labels, seed):
        n_val = round(len(stratum) * val_fraction)
        if val_fraction > 0 and n_val == 0 and len(stratum) >= 2:
            n_val = 1
        val_groups.extend(stratum[:n_val].tolist())
    is_val = np.isin(codes, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def group_kfold(
    groups: Sequence, labels: Sequence[bool] | torch.Tensor, k: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds of row indices ``(train, test)``; each group is in exactly one test fold."""
    codes, names = _group_codes(groups)
    if not 2 <= k <= len(names):
        raise ValueError(f"k: need 2 <= k <= number of groups ({len(names)}), got {k}")
    labels = np.asarray(labels, dtype=bool)
    fold_of: dict[int, int] = {}
    start = 0
    for stratum in _shuffled_strata(codes, labels, seed):
        for i, g in enumerate(stratum.tolist()):  # deal groups round-robin, continuing
            fold_of[g] = (start + i) % k
        start += len(stratum)
    fold = np.array([fold_of[c] for c in codes])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (used to standardise probe inputs)."""
    features = features.float()
    std = features.std(0, unbiased=False) if len(features) > 1 else torch.ones(features.shape[1])
    return features.mean(0), std.clamp(min=1e-6)


class ProbeDataModule(L.LightningDataModule):
    """Features ``[N, H]`` (or ``[N, 1, H]``), boolean labels and problem ids, split by problem.

    Args:
        features: a tensor, or a path written by :func:`ucoder.probes.io.save_features`.
        labels: ``[N]`` booleans (read from the file when ``features`` is a path).
        groups: ``[N]`` problem ids (read from the file when ``features`` is a path).
        val_fraction: share of problems held out for validation (0 = no validation).
        batch_size: rows per optimisation step.
        seed: seed of the split and of the shuffling.
        train_index / val_index: explicit row indices instead of a random grouped split.
        layer: which stored layer to use when features are ``[N, L, H]`` (position in dim 1).
    """

    def __init__(
        self,
        features: torch.Tensor | str | os.PathLike,
        labels: Sequence[bool] | torch.Tensor | None = None,
        groups: Sequence | None = None,
        val_fraction: float = 0.2,
        batch_size: int = 256,
        seed: int = 0,
        train_index: Sequence[int] | None = None,
        val_index: Sequence[int] | None = None,
        layer: int = 0,
    ):
        super().__init__()
        if isinstance(features, (str, os.PathLike)):
            from ucoder.probes.io import load_features

            stored = load_features(features)
            features = stored.features
            labels = stored.labels if labels is None else labels
            groups = stored.groups if groups is None else groups
        if labels is None or groups is None:
            raise ValueError("labels and groups are required when features is a tensor")
        if features.ndim == 3:
            features = features[:, layer]
        self.features = features.float()
        self.labels = torch.as_tensor(np.asarray(labels, dtype=bool))
        self.groups = [str(g) for g in groups]
        n = len(self.features)
        if len(self.labels) != n or len(self.groups) != n:
            raise ValueError(
                f"features, labels and groups differ in length ({n}, {len(self.labels)}, "
                f"{len(self.groups)})"
            )
        if train_index is None:
            train_index, val_index = grouped_split(self.groups, self.labels, val_fraction, seed)
        self.train_index = np.asarray(train_index, dtype=np.int64)
        self.val_index = np.asarray(val_index if val_index is not None else [], dtype=np.int64)
        if len(self.train_index) == 0:
            raise ValueError("no training rows: give more problems or a smaller val_fraction")
        self.batch_size, self.seed = batch_size, seed

    def _subset(self, index: np.ndarray) -> TensorDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return TensorDataset(self.features[index], self.labels[index])

    @property
    def has_val(self) -> bool:
        return len(self.val_index) > 0

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the training rows only (the validation rows stay unseen)."""
        return feature_stats(self.features[torch.as_tensor(self.train_index)])

    def pos_weight(self) -> float:
        """``n_negative / n_positive`` of the training rows, for class-balanced BCE."""
        y = self.labels[torch.as_tensor(self.train_index)]
        n_pos = int(y.sum())
        return (len(y) - n_pos) / n_pos if n_pos else 1.0

    def _loader(self, index: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
        # Whole batches are sliced out of the tensors at once (no per-row collation),
        # which is most of the cost when a probe step takes microseconds.
        data = self._subset(index)
        sampler = RandomSampler(data, generator=torch.Generator().manual_seed(self.seed))
        order = sampler if shuffle else range(len(data))
        return DataLoader(data, batch_size=None, sampler=BatchSampler(order, batch_size, False))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_index, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_index, 4096, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
