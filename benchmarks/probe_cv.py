"""Problem-grouped k-fold cross-validation of probes against score baselines.

Per outer fold: for each probe kind, one probe per layer is trained on the training
problems; the layer (and, for the headline number, the kind) is chosen on an inner
grouped validation split of the *training* problems only; the test fold is used once,
to measure. Baselines (mean token log-prob, completion length) get their sign from the
training fold. AUROCs are averaged over folds; pooled out-of-fold and within-problem
AUROCs are reported as well.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ucoder.probes import binary_metrics, group_kfold, layer_sweep


def auroc(scores, labels) -> float:
    return binary_metrics(torch.as_tensor(np.asarray(scores, dtype=np.float32)),
                          torch.as_tensor(np.asarray(labels, dtype=bool)))["auroc"]  # fmt: skip


def within_problem_auroc(scores, labels, groups) -> float:
    """Mean AUROC over problems with both classes (what selection inside a problem sees)."""
    scores, labels, groups = np.asarray(scores), np.asarray(labels, bool), np.asarray(groups)
    vals = [auroc(scores[groups == g], labels[groups == g]) for g in np.unique(groups)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _baseline(values: np.ndarray, y: np.ndarray, train, test) -> np.ndarray:
    sign = 1.0 if not auroc(values[train], y[train]) < 0.5 else -1.0
    return sign * values[test]


def cross_validate(
    feats: torch.Tensor,
    layers: list[int],
    gold: np.ndarray,
    train_labels: np.ndarray,
    groups: np.ndarray,
    baselines: dict[str, np.ndarray],
    kinds: tuple[str, ...] = ("linear", "mlp"),
    k: int = 5,
    seed: int = 0,
    max_epochs: int = 100,
    log=print,
) -> dict:
    """Train on ``train_labels`` (gold or consensus), always evaluate against ``gold``."""
    folds = group_kfold(groups, gold, k=k, seed=seed)
    per_fold: list[dict] = []
    oof = {name: np.full(len(gold), np.nan) for name in [*kinds, "probe", *baselines]}
    for f, (train, test) in enumerate(folds):
        row: dict = {"fold": f, "n_test": len(test), "n_test_pos": int(gold[test].sum())}
        best_kind, best_val = None, -math.inf
        for kind in kinds:
            sweep = layer_sweep(feats[train], train_labels[train], groups[train], layers, kind,
                                val_fraction=0.25, seed=seed, max_epochs=max_epochs)  # fmt: skip
            per_layer = {}
            for layer in layers:
                j = layers.index(layer)
                p = sweep.probes[layer].predict_proba(feats[test, j]).numpy()
                per_layer[layer] = auroc(p, gold[test])
                if layer == sweep.best_layer:
                    oof[kind][test] = p
            val = sweep.metrics[sweep.best_layer].get("val/auroc", math.nan)
            row[kind] = {"layer": sweep.best_layer, "val_auroc": val,
                         "test_auroc": per_layer[sweep.best_layer], "per_layer": per_layer}
            if not math.isnan(val) and val > best_val:
                best_kind, best_val = kind, val
        best_kind = best_kind or kinds[0]
        oof["probe"][test] = oof[best_kind][test]
        row["probe"] = {"kind": best_kind, "test_auroc": row[best_kind]["test_auroc"]}
        for name, values in baselines.items():
            s = _baseline(values, gold, train, test)
            oof[name][test] = s
            row[name] = auroc(s, gold[test])
        per_fold.append(row)
        log(f"fold {f}: test {row['n_test']} rows / {row['n_test_pos']} correct | "
            + " | ".join(f"{kd} L{row[kd]['layer']} val {row[kd]['val_auroc']:.3f} "
                         f"test {row[kd]['test_auroc']:.3f}" for kd in kinds)
            + f" | chosen {best_kind} | "
            + " ".join(f"{n} {row[n]:.3f}" for n in baselines))  # fmt: skip
    return _summary(per_fold, oof, gold, groups, layers, kinds, baselines)


def _summary(per_fold, oof, gold, groups, layers, kinds, baselines) -> dict:
    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)

    out: dict = {"folds": per_fold, "layers": layers}
    for name in [*kinds, "probe"]:
        out[name] = {"fold_mean_std": mean([r[name]["test_auroc"] for r in per_fold])}
    for name in baselines:
        out[name] = {"fold_mean_std": mean([r[name] for r in per_fold])}
    for name in [*kinds, "probe", *baselines]:
        out[name]["pooled_oof"] = auroc(oof[name], gold)
        out[name]["within_problem"] = within_problem_auroc(oof[name], gold, groups)
    for kind in kinds:
        out[kind]["per_layer"] = {
            layer: mean([r[kind]["per_layer"][layer] for r in per_fold]) for layer in layers
        }
    return out
