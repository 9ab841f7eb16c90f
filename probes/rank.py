"""Probes trained for the choice they make: ranking candidates inside one problem.

A pointwise probe (:func:`ucoder.probes.fit_probe`) learns "is this row correct" across
problems, and much of that is "can the model solve this problem at all", which does not
help to choose among one problem's candidates. Two remedies, both on problem groups:

* :func:`group_normalise`: features minus their problem's mean (what is left is what
  differs between candidates of one problem), for any pointwise probe;
* :func:`fit_ranker`: a linear scorer trained with a within-problem objective,
  ``pairwise`` (logistic loss on every positive/negative pair of a problem) or
  ``listwise`` (softmax cross-entropy over a problem's candidates, the positives as the
  target), or ``pointwise`` (class-balanced logistic loss, for comparison).

:func:`within_auroc` measures what selection needs: the AUROC inside each problem that
has both labels, averaged. :class:`Calibrator` maps ranker scores to probabilities
(Platt scaling on the training rows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

OBJECTIVES = ("pointwise", "pairwise", "listwise")


def _codes(groups: Sequence) -> torch.Tensor:
    names = {g: i for i, g in enumerate(dict.fromkeys(str(g) for g in groups))}
    return torch.tensor([names[str(g)] for g in groups], dtype=torch.long)


def group_normalise(features: torch.Tensor, groups: Sequence) -> torch.Tensor:
    """``features`` [N, H] minus the mean of their group's rows (one group = one problem)."""
    codes = _codes(groups)
    n = int(codes.max()) + 1 if len(codes) else 0
    sums = torch.zeros((n, features.shape[1])).index_add_(0, codes, features.float())
    counts = torch.bincount(codes, minlength=n).clamp(min=1).unsqueeze(1).float()
    return features.float() - (sums / counts)[codes]


def _pair_index(labels: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors (positive row, negative row) of every within-group pair."""
    pos, neg = [], []
    for g in codes.unique():
        rows = (codes == g).nonzero().flatten()
        p, q = rows[labels[rows]], rows[~labels[rows]]
        if len(p) and len(q):
            pos.append(p.repeat_interleave(len(q)))
            neg.append(q.repeat(len(p)))
    if not pos:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(pos), torch.cat(neg)


def _loss(objective: str, s: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, pairs
          ) -> torch.Tensor:
    if objective == "pairwise":
        return torch.nn.functional.softplus(s[pairs[1]] - s[pairs[0]]).mean()
    if objective == "listwise":
        total, n = s.new_zeros(()), 0
        for rows in pairs:  # rows of one group that has a positive
            logp = torch.log_softmax(s[rows], 0)
            total = total - logp[y[rows]].mean()
            n += 1
        return total / max(n, 1)
    pos_weight = (len(y) - y.sum()).clamp(min=1) / y.sum().clamp(min=1)
    return torch.nn.functional.binary_cross_entropy_with_logits(
        s, y.float(), pos_weight=pos_weight)


@dataclass
class Ranker:
    """A linear scorer on standardised features; higher = more likely correct."""

    weight: torch.Tensor
    bias: float
    mean: torch.Tensor
    std: torch.Tensor
    objective: str

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]`` (not probabilities; see :class:`Calibrator`)."""
        x = (features.float() - self.mean) / self.std
        return x @ self.weight + self.bias

    def to_probe(self, calibrator: Calibrator | None = None, *, layer: int = -1,
                 position: str = "last_completion", meta: dict | None = None):
        """A :class:`~ucoder.probes.LinearProbe` giving ``calibrator(score)``: it saves,
        loads and scores (``ProbeScorer``, ``ucoder eval --probe``) like any probe."""
        from ucoder.probes.modules import LinearProbe

        a, b = (calibrator.a, calibrator.b) if calibrator else (1.0, 0.0)
        probe = LinearProbe(self.weight.numel())
        probe.head.set_normalization(self.mean, self.std)
        with torch.no_grad():
            probe.head.net[-1].weight.copy_(a * self.weight.unsqueeze(0))
            probe.head.net[-1].bias.fill_(a * self.bias + b)
        probe.eval()
        probe.meta = {"kind": "linear", "layer": layer, "position": position,
                      "objective": self.objective, **(meta or {})}
        return probe


def fit_ranker(features: torch.Tensor, labels: Sequence[bool], groups: Sequence, *,
               objective: str = "pairwise", weight_decay: float = 1e-2, lr: float = 1e-2,
               steps: int = 300, seed: int = 0) -> Ranker:
    """A linear :class:`Ranker` trained with ``objective`` on problem groups.

    Args:
        features: ``[N, H]`` hidden states (one layer, one position).
        labels: per row, e.g. consensus membership (never hidden tests in a benchmark).
        groups: per row, the problem it belongs to.
        objective: ``pairwise``, ``listwise`` or ``pointwise``.
        weight_decay, lr, steps: AdamW settings of the full-batch training.
        seed: seeds the initial weights.

    Raises:
        ValueError: an unknown objective, or no group with both labels for a ranking one.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not allowed; choose one of "
                         f"{', '.join(OBJECTIVES)}")
    x = features.float()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    x = (x - mean) / std
    y, codes = torch.as_tensor(np.asarray(labels, dtype=bool)), _codes(groups)
    pairs = _pairs_for(objective, y, codes)
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], generator=gen) * 1e-3).requires_grad_()
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        _loss(objective, x @ w + b, y, codes, pairs).backward()
        opt.step()
    return Ranker(w.detach(), float(b.detach()), mean, std, objective)


def _pairs_for(objective: str, y: torch.Tensor, codes: torch.Tensor):
    if objective == "pointwise":
        return None
    if objective == "pairwise":
        pairs = _pair_index(y, codes)
        if not len(pairs[0]):
            raise ValueError("labels: a pairwise ranker needs a group with both labels")
        return pairs
    lists = [(codes == g).nonzero().flatten() for g in codes.unique()]
    lists = [rows for rows in lists if y[rows].any()]
    if not lists:
        raise ValueError("labels: a listwise ranker needs a group with a positive row")
    return lists


def within_auroc(scores: Sequence[float], labels: Sequence[bool], groups: Sequence
                 ) -> tuple[float, list[float]]:
    """Mean AUROC inside the groups that have both labels, and the per-group values."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    codes = _codes(groups).numpy()
    per = []
    for g in np.unique(codes):
        s, y = scores[codes == g], labels[codes == g]
        if y.any() and not y.all():
            diff = s[y][:, None] - s[~y][None, :]
            per.append(float((diff > 0).mean() + 0.5 * (diff == 0).mean()))
    return (float(np.mean(per)) if per else math.nan), per


@dataclass
class Calibrator:
    """Platt scaling: ``sigmoid(a * score + b)`` fitted on the training rows' labels."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, scores: torch.Tensor, labels: Sequence[bool], steps: int = 200
            ) -> Calibrator:
        """Fit ``a``, ``b`` by logistic loss (LBFGS) on ``scores`` and ``labels``.

        The fit runs on standardised scores in float64: ranking objectives leave scores
        of any scale (tens, for separable training rows), where plain LBFGS from
        ``a = 1`` overflows to NaN. A fit that still fails keeps the standardising map,
        which preserves the order.
        """
        s = scores.detach().double()
        y = torch.as_tensor(np.asarray(labels, float), dtype=torch.float64)
        mean, std = s.mean(), s.std(unbiased=False).clamp(min=1e-12)
        z = (s - mean) / std
        ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([ab], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
            loss.backward()
            return loss
        opt.step(closure)
        a, b = ab.detach().tolist()
        if not (math.isfinite(a) and math.isfinite(b)):
            a, b = 1.0, 0.0
        return cls(float(a / std), float(b - a * mean / std))

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.a * scores.float() + self.b)


def beats_logprob(probe_scores: Sequence[float], logprobs: Sequence[float],
                  labels: Sequence[bool], groups: Sequence, *, min_problems: int = 3
                  ) -> dict:
    """Whether a probe ranks held-out candidates within problems better than log-prob.

    What a loop asks before it lets a probe into selection: on rows the probe was not
    fitted on (e.g. a held-out split of the round), the within-problem AUROC of the
    probe's scores and of the mean log-prob against the same labels (consensus labels).

    Returns:
        ``{"probe", "logprob", "problems", "helps"}``; ``helps`` is False when fewer than
        ``min_problems`` problems have both labels (too little evidence to switch).
    """
    probe, per = within_auroc(probe_scores, labels, groups)
    logprob, _ = within_auroc(logprobs, labels, groups)
    helps = len(per) >= min_problems and probe > logprob
    return {"probe": probe, "logprob": logprob, "problems": len(per), "helps": bool(helps)}
