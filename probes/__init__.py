"""Hidden-state correctness probes for any Hugging Face causal LM.

Small linear/MLP heads read a model's hidden states at a chosen layer and token position
and predict whether a completion is correct. They train from any boolean label (real test
results, or execution-consensus membership, which needs no ground truth), and a saved
probe scores code from any source with its own base model as the reader. This package
imports nothing from ``ucoder``.

Usage::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from ucoder.probes import extract_features, fit_probe, save_probe, load_probe, ProbeScorer
    from ucoder.probes import Calibrator, fit_ranker

    model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
    tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
    feats = extract_features(model, tok, prompts, completions, layers=[-1])  # [N, 1, H]
    probe, metrics = fit_probe(feats[:, 0], labels, problem_ids, kind="linear")
    print(metrics["val/auroc"])
    save_probe(probe, "probe_dir", model=model)
    scores = ProbeScorer(model, tok, load_probe("probe_dir", model)).score(prompts, completions)

    # Trained for the choice a selection makes: rank one problem's candidates.
    ranker = fit_ranker(feats[:, 0], labels, problem_ids, objective="pairwise")
    probe = ranker.to_probe(Calibrator.fit(ranker.score(feats[:, 0]), labels), layer=-1)
"""

from ucoder.probes.data import ProbeDataModule, group_kfold, grouped_split
from ucoder.probes.extract import (
    POSITIONS,
    extract_features,
    extract_positions,
    hidden_size,
    num_hidden_layers,
)
from ucoder.probes.fit import binary_metrics, evaluate_probe, fit_probe
from ucoder.probes.io import (
    ProbeCompatibilityError,
    ProbeWeightsWarning,
    StoredFeatures,
    load_features,
    load_probe,
    model_fingerprint,
    save_features,
    save_probe,
    weights_fingerprint,
)
from ucoder.probes.modules import PROBE_KINDS, LinearProbe, MLPProbe, ProbeModule, build_probe
from ucoder.probes.rank import (
    OBJECTIVES,
    Calibrator,
    Ranker,
    beats_logprob,
    fit_ranker,
    group_normalise,
    within_auroc,
)
from ucoder.probes.scorer import ProbeScorer
from ucoder.probes.sweep import SweepResult, layer_sweep

__all__ = [
    "OBJECTIVES",
    "Calibrator",
    "Ranker",
    "beats_logprob",
    "fit_ranker",
    "group_normalise",
    "within_auroc",
    "POSITIONS",
    "PROBE_KINDS",
    "LinearProbe",
    "MLPProbe",
    "ProbeCompatibilityError",
    "ProbeDataModule",
    "ProbeModule",
    "ProbeScorer",
    "ProbeWeightsWarning",
    "StoredFeatures",
    "SweepResult",
    "binary_metrics",
    "build_probe",
    "evaluate_probe",
    "extract_features",
    "extract_positions",
    "fit_probe",
    "group_kfold",
    "grouped_split",
    "hidden_size",
    "layer_sweep",
    "load_features",
    "load_probe",
    "model_fingerprint",
    "num_hidden_layers",
    "save_features",
    "save_probe",
    "weights_fingerprint",
]
