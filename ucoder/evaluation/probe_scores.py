"""A saved probe's scores on an eval report's candidates, and the features behind them.

``ucoder eval --probe DIR`` reads every candidate's hidden states from its exact
generation context (``prompt_text``) plus its raw sampled text, at the probe's token
position and at every layer, keeps them beside the report (``REPORT.json`` ->
``REPORT.json.probe_features.safetensors``), and stores the probe's probability on each
candidate row (``probe_score``), which the ``probe`` and ``ucoder+probe`` policies read.
``ucoder eval --from-report REPORT.json --probe OTHER_DIR`` then scores with another
probe (another layer, kind or training) from the kept features, with no model loaded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

FEATURES_SUFFIX = ".probe_features.safetensors"


def features_path(report_path: str | Path) -> Path:
    """Where the features of the report at ``report_path`` are kept."""
    return Path(str(report_path) + FEATURES_SUFFIX)


def _candidates(report: dict) -> list[dict]:
    return [c for row in report.get("per_problem", []) for c in row.get("candidates", [])]


def candidate_texts(report: dict) -> tuple[list[str], list[str]]:
    """The (generation context, raw text) of every candidate, in report order.

    Raises:
        ValueError: a candidate row has no ``prompt_text`` (a report from before the rows
            carried it): the probe would read another context than the model saw.
    """
    cands = _candidates(report)
    if any(not c.get("prompt_text") for c in cands):
        raise ValueError("--probe needs candidate rows with prompt_text (the exact "
                         "generation context); this report has none: evaluate again")
    return [c["prompt_text"] for c in cands], [c.get("raw", c["code"]) for c in cands]


def rows_key(prompts: list[str], raws: list[str]) -> str:
    """A hash of the candidates' texts: features belong to exactly these rows."""
    return hashlib.sha256(json.dumps([prompts, raws]).encode()).hexdigest()[:16]


def probe_scorer(model, tokenizer, probe, path: str | Path, *, batch_size: int = 8):
    """``(prompts, raws) -> scores`` for ``evaluate(candidate_scorer=...)``: reads the
    states (kept at ``path`` by :func:`extract_features_to`) and applies ``probe``."""
    from ucoder.probes.io import check_compatible

    check_compatible(probe, model)

    def score(prompts: list[str], raws: list[str]) -> list[float]:
        feats = extract_features_to(model, tokenizer, prompts, raws, probe, path,
                                    batch_size=batch_size)
        return probe.predict_proba(_layer(feats, probe, None)).tolist()
    return score


def extract_features_to(model, tokenizer, prompts: list[str], raws: list[str], probe,
                        path: str | Path, *, batch_size: int = 8) -> torch.Tensor:
    """Every layer's states at ``probe``'s position for these candidates, saved at ``path``.

    Returns:
        ``[N, layers + 1, H]`` (index 0: embeddings).
    """
    from ucoder.probes import (
        extract_features,
        model_fingerprint,
        num_hidden_layers,
        save_features,
        weights_fingerprint,
    )

    position = probe.meta.get("position", "last_completion")
    layers = list(range(num_hidden_layers(model) + 1))
    feats = extract_features(model, tokenizer, prompts, raws, layers=layers,
                             position=position, batch_size=batch_size)
    meta = {"rows_key": rows_key(prompts, raws), "position": position, "layers": layers,
            "fingerprint": model_fingerprint(model),
            "weights_fingerprint": weights_fingerprint(model)}
    # The labels slot stays empty on purpose: hidden-test results must not train a probe.
    save_features(path, feats, [False] * len(prompts), ["" for _ in prompts], meta)
    return feats


def cached_features(report: dict, probe, path: str | Path) -> torch.Tensor:
    """The kept features for ``probe``: ``[N, H]`` at its layer and position.

    Raises:
        ValueError: no kept features, other rows, or another position.
        ProbeCompatibilityError: they were read from another architecture.
    """
    from ucoder.probes import ProbeCompatibilityError, ProbeWeightsWarning, load_features

    if not Path(path).is_file():
        raise ValueError(f"--probe with --from-report needs the features kept beside the "
                         f"report ({path}); run ucoder eval --probe once to write them")
    stored = load_features(path)
    meta = stored.meta
    if meta.get("rows_key") != rows_key(*candidate_texts(report)):
        raise ValueError(f"{path} holds features of other candidates than this report")
    position = probe.meta.get("position", "last_completion")
    if meta.get("position") != position:
        raise ValueError(f"--probe reads position {position!r}, but {path} holds "
                         f"{meta.get('position')!r}; run ucoder eval --probe again")
    if probe.meta.get("fingerprint") and probe.meta["fingerprint"] != meta.get("fingerprint"):
        raise ProbeCompatibilityError(
            f"{probe.meta.get('path', 'the probe')} was trained on another architecture "
            f"({probe.meta.get('base_model')}) than the model these features come from")
    weights = probe.meta.get("weights_fingerprint")
    if weights and weights != meta.get("weights_fingerprint"):
        warnings.warn("the probe was fitted on other weights of this architecture than the "
                      "features were read from", ProbeWeightsWarning, stacklevel=2)
    return _layer(stored.features, probe, meta["layers"])


def _layer(feats: torch.Tensor, probe, layers: list[int] | None) -> torch.Tensor:
    """``feats`` [N, L, H] (every layer, or ``layers``) at the probe's layer: [N, H]."""
    layers = layers or list(range(feats.shape[1]))
    layer = int(probe.meta.get("layer", -1))
    return feats[:, layers.index(layer if layer >= 0 else len(layers) + layer)]


def apply_scores(report: dict, probe, features: torch.Tensor) -> None:
    """Write ``probe``'s probability on every candidate row and name the probe used."""
    scores = probe.predict_proba(features).tolist()
    for cand, score in zip(_candidates(report), scores, strict=True):
        cand["probe_score"] = round(float(score), 6)
    report["probe"] = {k: probe.meta.get(k) for k in ("path", "kind", "layer", "position",
                                                       "base_model")}
