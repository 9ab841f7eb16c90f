"""Cross-fitted probes and the selection they drive, for benchmarks/probes.py.

Labels are consensus labels only: membership of the winning cluster of the registry's
``ucoder`` policy on the candidates' behaviour on the prompt's example inputs (and their
mutations), never HumanEval's hidden tests. Every problem's probe scores come from probes
fitted on the other folds' problems (cross-fitting); inside each fold, the layer and
token position of each method are chosen on an inner grouped split of the training
problems by within-problem AUROC against consensus labels, and the method whose inner
score is best over the folds is "probe". The hidden tests are read only to score.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch

from ucoder.evaluation.selection import ProblemTests, pick
from ucoder.ipc.consensus import Candidate, SelectionConfig, select
from ucoder.probes import (
    Calibrator,
    fit_probe,
    fit_ranker,
    group_kfold,
    group_normalise,
    grouped_split,
    within_auroc,
)

# "pointwise": the current probe's objective (linear, class-balanced logistic loss on
# standardised features) in the fast full-batch trainer; "fit_probe": the current probe
# itself (Lightning, minibatches; slower, so only on request).
METHODS = ("pointwise", "pointwise_norm", "pairwise", "listwise")
ALL_METHODS = METHODS + ("fit_probe",)
SELECTION = SelectionConfig(signature="output", min_success=0.8, min_cluster=2)


def by_problem(rows: list[dict]) -> dict[str, list[int]]:
    """Row indices per task id, in row order."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(r["task_id"], []).append(i)
    return out


def to_candidate(r: dict, probe: float | None = None) -> Candidate:
    """A registry candidate from a labelled row (its example-input behaviour)."""
    ran = r.get("signature") is not None
    return Candidate(completion=r["completion"], mean_logprob=float(r["mean_logprob"]),
                     passed=list(r["test_passed"]) if ran else [],
                     hashes=list(r["signature"]) if ran else [], extra_score=probe)


def consensus_labels(rows: list[dict]) -> np.ndarray:
    """Membership of the ``ucoder`` cluster per row (what the loop would label)."""
    labels = np.zeros(len(rows), dtype=bool)
    for idx in by_problem(rows).values():
        labels[idx] = select([to_candidate(rows[i]) for i in idx], SELECTION).in_consensus
    return labels


def _fit(method: str, x: torch.Tensor, y: np.ndarray, groups: list, seed: int):
    """A scorer ``(features, groups) -> scores`` fitted with ``method``."""
    if method == "fit_probe":
        probe, _ = fit_probe(x, torch.as_tensor(y), groups, kind="linear", seed=seed,
                             val_fraction=0.0, max_epochs=30)
        head = probe.head
        return lambda xt, gt: head(xt.float()).detach()
    if method == "pointwise_norm":
        ranker = fit_ranker(group_normalise(x, groups), y, groups, objective="pointwise",
                            seed=seed)
        return lambda xt, gt: ranker.score(group_normalise(xt, gt))
    ranker = fit_ranker(x, y, groups, objective=method, seed=seed)
    return lambda xt, gt: ranker.score(xt)


def _sweep(method, feats, y, groups, train, seed) -> tuple[tuple[str, int], float]:
    """The (position, layer index) with the best inner within-problem AUROC."""
    g_train = [groups[i] for i in train]
    inner_tr, inner_va = grouped_split(g_train, y[train], val_fraction=0.25, seed=seed)
    tr, va = train[inner_tr], train[inner_va]
    best, best_score = None, -1.0
    for pos, x in feats.items():
        for j in range(x.shape[1]):
            try:
                fn = _fit(method, x[tr, j], y[tr], [groups[i] for i in tr], seed)
            except ValueError:  # no usable group in this inner split
                continue
            score, _ = within_auroc(fn(x[va, j], [groups[i] for i in va]).tolist(), y[va],
                                    [groups[i] for i in va])
            if not np.isnan(score) and score > best_score:
                best, best_score = (pos, j), score
    return best or (next(iter(feats)), -1), best_score


def cross_fit(feats: dict[str, torch.Tensor], y: np.ndarray, groups: list, *, k: int = 5,
              seed: int = 0, methods=METHODS, log=print) -> dict:
    """Out-of-fold calibrated scores per method, the chosen settings and inner scores."""
    out = {m: {"scores": np.zeros(len(y)), "chosen": [], "inner": []} for m in methods}
    for f, (train, test) in enumerate(group_kfold(groups, y, k=k, seed=seed)):
        g_tr, g_te = [groups[i] for i in train], [groups[i] for i in test]
        for m in methods:
            (pos, j), inner = _sweep(m, feats, y, groups, train, seed + f)
            try:
                fn = _fit(m, feats[pos][train, j], y[train], g_tr, seed)
            except ValueError as err:  # no training problem with both labels
                log(f"fold {f} {m}: not fitted ({err}); its problems score 0.5")
                out[m]["scores"][test] = 0.5
                continue
            calib = Calibrator.fit(fn(feats[pos][train, j], g_tr), y[train])
            out[m]["scores"][test] = calib(fn(feats[pos][test, j], g_te)).numpy()
            out[m]["chosen"].append([pos, j])
            out[m]["inner"].append(inner)
            log(f"fold {f} {m}: position={pos} layer#{j} inner within-AUROC {inner:.3f}")
    for m in methods:
        out[m]["inner_mean"] = float(np.mean(out[m]["inner"]))
    out["probe"] = max(methods, key=lambda m: out[m]["inner_mean"])
    return out


def _result(r: dict) -> SimpleNamespace | None:
    if r.get("signature") is None:
        return None
    return SimpleNamespace(tests=[SimpleNamespace(passed=p, hash=h)
                                  for p, h in zip(r["test_passed"], r["signature"])])


def selections(rows: list[dict], scores: np.ndarray, greedy: dict[str, bool],
               names=("greedy", "max_logprob", "ucoder", "probe", "ucoder+probe"),
               seed: int = 0) -> dict[str, dict]:
    """Per policy: per-problem 0/1 outcomes (task order) and fallback steps, through
    ``ucoder.evaluation.selection.pick`` (what ``ucoder eval`` runs)."""
    out = {n: {"outcomes": [], "fallbacks": {}} for n in names}
    for task, idx in by_problem(rows).items():
        samples = [{"code": rows[i]["completion"], "mean_logprob": rows[i]["mean_logprob"],
                    "passed": rows[i]["passed"], "probe_score": float(scores[i]),
                    "result": _result(rows[i])} for i in idx]
        run = {"greedy": {"passed": greedy.get(task, False)}, "samples": samples,
               "tests": ProblemTests(prompt=["<example inputs>"])}
        rng = random.Random(f"{seed}/{task}")
        for n in names:
            choice = pick(n, run, SELECTION, seed, rng)
            out[n]["outcomes"].append(int(bool(choice["passed"])))
            step = choice.get("fallback_step")
            if step:
                out[n]["fallbacks"][step] = out[n]["fallbacks"].get(step, 0) + 1
    return out
