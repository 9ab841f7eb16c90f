"""Save and load probes (safetensors + JSON) and stored features.

A probe directory holds ``probe.safetensors`` (weights and feature normalisation) and
``probe.json`` (kind, hyper-parameters, hidden size, layer, token position, base model
name, the base model's architecture with its fingerprint, and a fingerprint of its
weights, adapter included). Loading with a model checks that the probe fits it: another
architecture (another family, another size) is refused with a message that says what
differs; the same architecture with other weights (another checkpoint, the model after
more LoRA training) is a :class:`ProbeWeightsWarning`, since the probe still runs but
reads hidden states it was not fitted on.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ucoder.probes.extract import hidden_size as model_hidden_size
from ucoder.probes.extract import num_hidden_layers
from ucoder.probes.modules import PROBE_KINDS, ProbeModule

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "probe.safetensors", "probe.json"

# Architecture fields that decide what a hidden state means; dtype, quantisation, paths
# and the transformers version do not, so a 4-bit copy of a model has the same print.
_ARCH_KEYS = (
    "model_type", "hidden_size", "n_embd", "num_hidden_layers", "n_layer",
    "num_attention_heads", "n_head", "num_key_value_heads", "intermediate_size", "n_inner",
    "vocab_size", "max_position_embeddings", "n_positions", "rope_theta", "head_dim",
    "rms_norm_eps", "layer_norm_epsilon", "hidden_act", "activation_function",
    "tie_word_embeddings",
)  # fmt: skip


SAMPLED_VALUES = 64  # values hashed per parameter tensor, evenly strided over it


class ProbeCompatibilityError(ValueError):
    """The probe was trained on a model that differs from the one it is used with."""


class ProbeWeightsWarning(UserWarning):
    """The probe was fitted on the same architecture with other weights."""


def architecture(model) -> dict[str, Any]:
    """The fields of ``model.config`` that decide what a hidden state means (JSON values)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    values = {k: getattr(config, k, None) for k in _ARCH_KEYS}
    return json.loads(json.dumps({k: v for k, v in values.items() if v is not None}))


def model_fingerprint(model) -> str:
    """A short hash of :func:`architecture` (not of the weights: :func:`weights_fingerprint`)."""
    blob = json.dumps(architecture(model), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def weights_fingerprint(model) -> str:
    """A short hash of the weights as stored, base and adapter (LoRA) alike.

    Covers every parameter's name, shape and dtype and :data:`SAMPLED_VALUES` evenly
    strided values of it, as stored: a 4-bit weight is hashed as its packed bytes, so a
    4-bit and a 16-bit copy of one checkpoint differ, and so do a PEFT model and its
    merged copy. Training changes every LoRA entry, so a sample sees it; indices are
    integers, so the print is the same on any device.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        t = param.detach()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        if t.is_meta or t.numel() == 0:  # offloaded: only its description is known here
            continue
        flat, k = t.reshape(-1), min(SAMPLED_VALUES, t.numel())
        idx = torch.arange(k, device=t.device) * (t.numel() - 1) // max(k - 1, 1)
        digest.update(flat[idx].cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def model_name(model) -> str:
    """The name or path the model was loaded from, or its class name."""
    name = getattr(model.config, "name_or_path", None) or getattr(model, "name_or_path", "")
    return str(name) or type(model).__name__


def save_probe(
    probe: ProbeModule, directory: str | os.PathLike, model=None, base_model: str | None = None
) -> Path:
    """Write ``probe`` to ``directory``; with ``model``, record its name and fingerprint.

    Args:
        probe: a fitted :class:`LinearProbe` or :class:`MLPProbe`.
        directory: created if missing; existing probe files are replaced.
        model: the base model the features came from (recommended).
        base_model: the name to record (default: the model's ``name_or_path``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = dict(probe.meta)
    if model is not None:
        if model_hidden_size(model) != probe.hidden_size:
            raise ProbeCompatibilityError(
                f"model: hidden size {model_hidden_size(model)} does not match the probe's "
                f"{probe.hidden_size}; pass the model the features were extracted from"
            )
        meta.update(base_model=model_name(model), fingerprint=model_fingerprint(model),
                    architecture=architecture(model),
                    weights_fingerprint=weights_fingerprint(model))
    if base_model is not None:
        meta["base_model"] = base_model
    config = {
        "format_version": FORMAT_VERSION,
        "kind": probe.kind,
        "hparams": dict(probe.hparams),
        "hidden_size": probe.hidden_size,
        **{k: v for k, v in meta.items() if k not in ("kind", "hidden_size")},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def check_compatible(probe: ProbeModule, model, *, strict: bool = True) -> None:
    """Raise :class:`ProbeCompatibilityError` if ``probe`` cannot read ``model``'s states.

    Checks the hidden size, the layer index and (when ``strict``) the architecture print;
    when ``strict``, other weights of the same architecture are a :class:`ProbeWeightsWarning`.
    """
    where = probe.meta.get("path", "the probe")
    size = model_hidden_size(model)
    if size != probe.hidden_size:
        raise ProbeCompatibilityError(
            f"{where} was trained on hidden size {probe.hidden_size} "
            f"({probe.meta.get('base_model', 'unknown model')}), but the model has hidden size "
            f"{size}; use the probe's base model or fit a new probe on this one"
        )
    layer, n_layers = probe.meta.get("layer", -1), num_hidden_layers(model)
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ProbeCompatibilityError(
            f"{where} reads layer {layer}, but the model has only {n_layers} layers"
        )
    if strict:
        _check_fingerprints(probe.meta, model, where)


def _check_fingerprints(meta: dict, model, where: str) -> None:
    stored = meta.get("fingerprint")
    if stored and stored != model_fingerprint(model):
        raise ProbeCompatibilityError(
            f"{where} was trained on {meta.get('base_model')} (fingerprint {stored}), "
            f"another architecture than this model's ({_differences(meta, model)}); its "
            "hidden states mean something else. Fit a probe on this model, or pass "
            "strict=False to use it anyway"
        )
    weights = meta.get("weights_fingerprint")
    if weights and weights != weights_fingerprint(model):
        warnings.warn(
            f"{where} was fitted on other weights of this architecture "
            f"({meta.get('base_model')}, weights {weights}; this model's: "
            f"{weights_fingerprint(model)}): another checkpoint or adapter; refit it for "
            "these weights if its scores matter", ProbeWeightsWarning, stacklevel=4)


def _differences(meta: dict, model) -> str:
    """``key stored -> this model's`` for each architecture field that differs."""
    if "architecture" not in meta:  # saved before the fields were recorded
        return f"fingerprint {model_fingerprint(model)}"
    theirs, ours = meta["architecture"], architecture(model)
    return ", ".join(f"{k} {theirs.get(k)!r} -> {ours.get(k)!r}"
                     for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))


def load_probe(directory: str | os.PathLike, model=None, *, strict: bool = True) -> ProbeModule:
    """Read a probe written by :func:`save_probe`; with ``model``, check it fits.

    Raises:
        FileNotFoundError: ``directory`` has no probe files.
        ProbeCompatibilityError: the model's hidden size, depth or architecture differ.
    """
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"probe: {directory} has no {CONFIG} and {WEIGHTS}")
    config = json.loads((directory / CONFIG).read_text())
    kind = config.get("kind")
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe: {directory / CONFIG} has unknown kind {kind!r}")
    probe = PROBE_KINDS[kind](**config["hparams"])
    probe.load_state_dict(load_file(str(directory / WEIGHTS)))
    probe.eval()
    skip = ("format_version", "kind", "hparams", "hidden_size")
    probe.meta = {k: v for k, v in config.items() if k not in skip}
    probe.meta["path"] = str(directory)
    if model is not None:
        check_compatible(probe, model, strict=strict)
    return probe


@dataclass
class StoredFeatures:
    """Features ``[N, L, H]`` with their labels, problem ids and free-form metadata."""

    features: torch.Tensor
    labels: torch.Tensor
    groups: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def save_features(
    path: str | os.PathLike,
    features: torch.Tensor,
    labels: torch.Tensor | list[bool],
    groups: list,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Store features, labels and groups in one safetensors file (metadata as JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "features": features.float().contiguous(),
        "labels": torch.as_tensor(labels, dtype=torch.bool).contiguous(),
    }
    header = {"groups": json.dumps([str(g) for g in groups]), "meta": json.dumps(meta or {})}
    save_file(tensors, str(path), metadata=header)
    return path


def load_features(path: str | os.PathLike) -> StoredFeatures:
    """Read a file written by :func:`save_features`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return StoredFeatures(
        tensors["features"],
        tensors["labels"],
        json.loads(header.get("groups", "[]")),
        json.loads(header.get("meta", "{}")),
    )
