"""Save and load probes (safetensors + JSON) and stored features.

A probe directory holds ``probe.safetensors`` (weights and feature normalisation) and
``probe.json`` (kind, hyper-parameters, hidden size, layer, token position, base model
name and a fingerprint of the base model's architecture). Loading with a model checks
that the probe fits it and fails with a message that says what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
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


class ProbeCompatibilityError(ValueError):
    """The probe was trained on a model that differs from the one it is used with."""


def model_fingerprint(model) -> str:
    """A short hash of the architecture fields of ``model.config`` (not of its weights)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    values = {k: getattr(config, k, None) for k in _ARCH_KEYS}
    blob = json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        meta.update(base_model=model_name(model), fingerprint=model_fingerprint(model))
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

    Checks the hidden size, the layer index and (when ``strict``) the architecture print.
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
    stored = probe.meta.get("fingerprint")
    if strict and stored and stored != model_fingerprint(model):
        raise ProbeCompatibilityError(
            f"{where} was trained on {probe.meta.get('base_model')} (fingerprint {stored}); "
            f"this model's architecture differs (fingerprint {model_fingerprint(model)}). "
            "Pass strict=False to use it anyway"
        )


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
