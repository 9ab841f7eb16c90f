"""Within-problem ranking probes: objectives, group normalisation, calibration."""

from __future__ import annotations

import math

import pytest
import torch

from ucoder.probes import Calibrator, fit_ranker, group_normalise, within_auroc


def _data(seed: int = 0, problems: int = 30, per: int = 6):
    """Problem offsets dominate dimension 0 (and the label rate); dimension 1 decides
    which candidates of a problem are right."""
    g = torch.Generator().manual_seed(seed)
    rows, labels, groups = [], [], []
    for p in range(problems):
        easy = p % 2 == 0
        offset = 5.0 if easy else -5.0
        for k in range(per):
            good = (k < per - 1) if easy else (k == 0)
            x = torch.randn(4, generator=g) * 0.3
            x[0] += offset
            x[1] += 1.0 if good else -1.0
            x[0] -= 2.0 if good else 0.0  # within a problem, dimension 0 misleads
            rows.append(x)
            labels.append(good)
            groups.append(f"p{p}")
    return torch.stack(rows), labels, groups


def test_group_normalise_removes_each_problems_mean():
    x, _, groups = _data()
    z = group_normalise(x, groups)
    assert torch.allclose(z[:6].mean(0), torch.zeros(4), atol=1e-5)
    assert not torch.allclose(x[:6].mean(0), torch.zeros(4), atol=1e-1)


@pytest.mark.parametrize("objective", ["pairwise", "listwise"])
def test_ranking_objectives_rank_within_problems(objective):
    x, y, groups = _data()
    test_x, test_y, test_g = _data(seed=1)
    ranker = fit_ranker(x, y, groups, objective=objective)
    within, per = within_auroc(ranker.score(test_x).tolist(), test_y, test_g)
    assert len(per) == 30
    assert within > 0.95


def test_within_auroc_ignores_one_label_groups_and_counts_ties_half():
    mean, per = within_auroc([1, 1, 0.5, 3], [True, False, True, True], ["a", "a", "b", "b"])
    assert per == [0.5] and mean == 0.5


def test_unknown_objective_and_no_pair_raise():
    x, y, g = _data(problems=2)
    with pytest.raises(ValueError, match="objective='ndcg'"):
        fit_ranker(x, y, g, objective="ndcg")
    with pytest.raises(ValueError, match="pairwise ranker needs"):
        fit_ranker(x, [True] * len(y), g, objective="pairwise")


def test_calibrator_maps_scores_to_probabilities_that_match_the_rate():
    x, y, g = _data()
    scores = fit_ranker(x, y, g, objective="pairwise").score(x)
    probs = Calibrator.fit(scores, y)(scores)
    assert 0.0 <= float(probs.min()) and float(probs.max()) <= 1.0
    assert abs(float(probs.mean()) - sum(y) / len(y)) < 0.05
    order = torch.argsort(scores)
    assert torch.all(probs[order][1:] >= probs[order][:-1] - 1e-6)  # monotone


def test_calibrator_stays_finite_on_ranker_scores_of_large_scale():
    # Scores of tens, as ranking objectives leave on separable rows: plain LBFGS from
    # a = 1 overflowed to NaN here, and every comparison of NaN scores counted as a loss.
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(400, generator=gen) < 0.15
    scores = torch.randn(400, generator=gen) * 20 + 30 * y.float()
    calib = Calibrator.fit(scores, y.tolist())
    probs = calib(scores)
    assert math.isfinite(calib.a) and math.isfinite(calib.b) and calib.a > 0
    assert torch.isfinite(probs).all()
    same_order = within_auroc(scores.tolist(), y.tolist(), [0] * 400)[0]
    assert within_auroc(probs.tolist(), y.tolist(), [0] * 400)[0] == pytest.approx(same_order)


def test_a_calibrated_ranker_saves_and_loads_as_a_probe(tmp_path):
    from ucoder.probes import load_probe, save_probe

    x, y, g = _data()
    ranker = fit_ranker(x, y, g, objective="listwise")
    calib = Calibrator.fit(ranker.score(x), y)
    probe = ranker.to_probe(calib, layer=3, position="mean_completion")
    save_probe(probe, tmp_path / "p")
    loaded = load_probe(tmp_path / "p")
    assert loaded.meta["layer"] == 3 and loaded.meta["objective"] == "listwise"
    assert torch.allclose(loaded.predict_proba(x), calib(ranker.score(x)), atol=1e-5)


def test_beats_logprob_needs_a_better_within_ranking_on_enough_problems():
    from ucoder.probes import beats_logprob

    labels = [True, False] * 4
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    good = [0.9, 0.1] * 4
    bad = [0.1, 0.9] * 4
    assert beats_logprob(good, bad, labels, groups) == {
        "probe": 1.0, "logprob": 0.0, "problems": 4, "helps": True}
    assert beats_logprob(bad, good, labels, groups)["helps"] is False
    assert beats_logprob(good, bad, labels, groups, min_problems=5)["helps"] is False
