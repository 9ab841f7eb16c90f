"""Grouped splits, probe training, layer sweeps: real outcomes on planted signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.probes import (
    LinearProbe,
    MLPProbe,
    ProbeDataModule,
    extract_features,
    fit_probe,
    group_kfold,
    grouped_split,
    layer_sweep,
    load_features,
    save_features,
)


def planted(n_groups=40, per_group=6, hidden=24, seed=0, layers=1, signal_layer=0):
    """Features where one direction (in one layer) predicts the label."""
    g = torch.Generator().manual_seed(seed)
    n = n_groups * per_group
    labels = torch.rand(n, generator=g) < 0.3
    feats = torch.randn(n, layers, hidden, generator=g) * 3 + 5
    feats[:, signal_layer, 0] += labels.float() * 8.0
    groups = [f"p{i // per_group}" for i in range(n)]
    return feats, labels, groups


def test_grouped_split_keeps_problems_on_one_side():
    _, labels, groups = planted()
    train, val = grouped_split(groups, labels, 0.25, seed=3)
    g = np.array(groups)
    assert set(g[train]).isdisjoint(g[val])
    assert len(train) + len(val) == len(groups) and len(val) > 0
    assert labels[val].any() and (~labels[val]).any()


def test_group_kfold_tests_every_problem_once():
    _, labels, groups = planted()
    folds = group_kfold(groups, labels, k=5)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(groups)))
    g = np.array(groups)
    for train, test in folds:
        assert set(g[train]).isdisjoint(g[test])
    with pytest.raises(ValueError, match="k: need"):
        group_kfold(groups, labels, k=500)


@pytest.mark.parametrize("kind, cls", [("linear", LinearProbe), ("mlp", MLPProbe)])
def test_fit_probe_learns_planted_direction(kind, cls):
    feats, labels, groups = planted()
    before = torch.random.get_rng_state()
    probe, metrics = fit_probe(feats[:, 0], labels, groups, kind=kind, max_epochs=60)
    assert torch.equal(before, torch.random.get_rng_state())  # caller's RNG untouched
    assert isinstance(probe, cls) and not probe.training
    assert metrics["val/auroc"] > 0.9, metrics
    assert {"val/ap", "val/ece", "val/acc", "val/loss", "n_train", "n_val"} <= set(metrics)
    # Normalisation comes from the training rows (features have mean ~5, std ~3).
    assert abs(float(probe.head.feature_mean[1]) - 5) < 1
    assert probe.meta == {"kind": kind, "layer": -1, "position": "last_completion"}
    # Same seed, same probe.
    again, _ = fit_probe(feats[:, 0], labels, groups, kind=kind, max_epochs=60)
    torch.testing.assert_close(probe.predict_proba(feats[:5, 0]), again.predict_proba(feats[:5, 0]))


def test_fit_probe_without_validation_reports_train_metrics():
    feats, labels, groups = planted(n_groups=10)
    _, metrics = fit_probe(feats, labels, groups, val_fraction=0.0, max_epochs=5)
    assert "train/auroc" in metrics and metrics["n_val"] == 0


def test_predict_proba_rejects_wrong_width():
    feats, labels, groups = planted(n_groups=10)
    probe, _ = fit_probe(feats[:, 0], labels, groups, max_epochs=2)
    with pytest.raises(ValueError, match=r"expected shape \[N, 24\]"):
        probe.predict_proba(torch.zeros(3, 25))


def test_layer_sweep_finds_the_informative_layer():
    feats, labels, groups = planted(layers=3, signal_layer=1)
    result = layer_sweep(feats, labels, groups, layers=[0, 4, -1], max_epochs=40)
    assert result.best_layer == 4
    assert result.best_probe.meta["layer"] == 4
    assert result.metrics[4]["val/auroc"] > 0.9 > result.metrics[0]["val/auroc"]
    assert "*" in result.table().splitlines()[2]


def test_datamodule_over_stored_features(tmp_path):
    feats, labels, groups = planted(n_groups=12, layers=2)
    path = save_features(tmp_path / "f.safetensors", feats, labels, groups, {"layers": [0, -1]})
    stored = load_features(path)
    assert torch.equal(stored.features, feats) and stored.groups == groups
    assert stored.meta == {"layers": [0, -1]}
    dm = ProbeDataModule(path, val_fraction=0.25, layer=1, batch_size=16)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 24) and y.dtype == torch.bool
    g = np.array(groups)
    assert set(g[dm.train_index]).isdisjoint(g[dm.val_index])
    mean, _ = dm.normalization()
    torch.testing.assert_close(mean, feats[dm.train_index, 1].mean(0))
    train_y = labels[dm.train_index]
    assert math.isclose(dm.pos_weight(), float((~train_y).sum() / train_y.sum()), rel_tol=1e-6)


def test_end_to_end_on_tiny_model_hidden_states():
    """A probe on a random Llama's states separates completions that return vs pass."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    prompts, completions, labels, groups = [], [], [], []
    for i in range(24):
        for j, body in enumerate(["    return x + 1", "    pass", f"    return {i}", "    x = 1"]):
            prompts.append(f"def f{i}(x):\n")
            completions.append(body)
            labels.append(body.strip().startswith("return"))
            groups.append(i)
    feats = extract_features(model, tok, prompts, completions, layers=[-1], batch_size=32)
    probe, metrics = fit_probe(feats[:, 0], labels, groups, kind="linear", max_epochs=60)
    assert metrics["val/auroc"] > 0.9, metrics


def test_binary_metrics_ranks_unbounded_scores():
    from ucoder.probes import binary_metrics

    y = torch.tensor([0, 0, 1, 1])
    # Large raw scores (token counts) must not saturate into ties.
    assert binary_metrics(torch.tensor([40.0, 50.0, 60.0, 70.0]), y)["auroc"] == 1.0
    assert binary_metrics(torch.tensor([70.0, 60.0, 50.0, 40.0]), y)["auroc"] == 0.0
    assert binary_metrics(torch.tensor([1.0, 1.0, 1.0, 1.0]), y)["auroc"] == 0.5
    assert math.isnan(binary_metrics(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))["auroc"])
