"""ProbeRefitter: a correctness probe fit on one round's consensus labels.

The labels need no ground truth: a candidate is positive when it belongs to the winning
execution-consensus cluster of its problem (``consensus.jsonl``, field ``in_consensus``).
The probe reads the hidden states of the very model being trained, at exactly the text
the model generated from (contract C3): the row's ``prompt_text`` (chat template and
answer prefix included) followed by its ``raw`` sampled text. It is refit every round;
as a scorer it becomes the ``extra_score`` of the next round's selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ucoder.callbacks.base import log


class ProbeRefitter:
    """Fit, save and apply a hidden-state probe on a round's candidate rows.

    Args:
        layer: hidden-state index (0 = embeddings, -1 = last block).
        position: ``last_completion``, ``last_prompt`` or ``mean_completion``.
        kind: ``linear`` or ``mlp``.
        use_in_selection: hand the probe's scores to the next round's selection (the
            round's ``selection.extra_weight`` and policy must use them).
        require_beats_logprob: with ``use_in_selection``, hand them over only when the
            probe ranks the round's held-out problems' candidates better than their mean
            log-prob does (within-problem AUROC on consensus labels); otherwise the next
            round selects without a probe. The round report says which it used.
        val_fraction: share of the round's problems held out for early stopping and that
            comparison.
        min_examples: fewer labelled candidates than this (or one class only): skip.
        max_epochs: upper bound of the probe's training epochs (early stopping on val).
        batch_size: rows per forward pass when reading hidden states.
        seed: split and initialisation seed.
    """

    def __init__(self, layer: int = -1,
                 position: Literal["last_completion", "last_prompt",
                                   "mean_completion"] = "last_completion",
                 kind: Literal["linear", "mlp"] = "linear", use_in_selection: bool = False,
                 require_beats_logprob: bool = True, val_fraction: float = 0.25,
                 min_examples: int = 8, max_epochs: int = 100, batch_size: int = 8,
                 seed: int = 0):
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind={kind!r} is not allowed: expected 'linear' or 'mlp'")
        self.layer, self.position, self.kind = layer, position, kind
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r} is not allowed: expected a "
                             "number in (0, 1) (the held-out share of a round's problems)")
        self.use_in_selection = use_in_selection
        self.require_beats_logprob = require_beats_logprob
        self.val_fraction = val_fraction
        self.min_examples, self.max_epochs, self.batch_size = min_examples, max_epochs, batch_size
        self.seed = seed

    @staticmethod
    def inputs(rows: Sequence[dict], format_prompt: Callable[[str], str] | None = None
               ) -> tuple[list[str], list[str]]:
        """What the model read and wrote for each candidate row: ``(prompt_text, raw)``.

        Rows written before those fields existed fall back to ``format_prompt(prompt)``
        (the generation context rebuilt) and the extracted ``completion``.
        """
        texts, outputs = [], []
        for row in rows:
            text = row.get("prompt_text")
            if not text:
                if format_prompt is None:
                    raise ValueError("a candidate row has no prompt_text: pass format_prompt")
                text = format_prompt(row["prompt"])
            texts.append(text)
            outputs.append(row.get("raw") or row["completion"])
        return texts, outputs

    def fit(self, model, tokenizer, rows: Sequence[dict], round_index: int):
        """Fit on ``rows`` (``consensus.jsonl``); returns ``(probe or None, record)``."""
        labels = [bool(r.get("in_consensus")) for r in rows]
        record: dict[str, Any] = {"round": round_index, "candidates": len(rows),
                                  "positives": sum(labels)}
        if len(rows) < self.min_examples or len(set(labels)) < 2:
            record["skipped"] = (f"{len(rows)} candidates, {sum(labels)} positive: need "
                                 f">= {self.min_examples} and both classes")
            log.info("probe round %d: skipped (%s)", round_index, record["skipped"])
            return None, record
        from ucoder.probes import extract_features, fit_probe, grouped_split

        texts, outputs = self.inputs(rows, _formatter(model, tokenizer))
        with _eval_mode(model):
            feats = extract_features(model, tokenizer, texts, outputs, layers=[self.layer],
                                     position=self.position, batch_size=self.batch_size)
        groups = [r.get("problem_id") for r in rows]
        train, val = grouped_split(groups, labels, self.val_fraction, self.seed)
        probe, metrics = fit_probe(feats[:, 0], labels, groups, kind=self.kind,
                                   max_epochs=self.max_epochs, seed=self.seed,
                                   train_index=train, val_index=val,
                                   layer=self.layer, position=self.position,
                                   meta={"round": round_index, "labels": "in_consensus"})
        record.update({k: float(v) for k, v in metrics.items()})
        record["auroc"] = metrics.get("val/auroc", metrics.get("train/auroc"))
        record["held_out"] = held_out_ranking(probe, feats[:, 0], rows, labels, val)
        log.info("probe round %d: consensus-label AUROC %.3f (%d candidates, %d positive); "
                 "held-out within-problem AUROC probe %.3f vs log-prob %.3f on %d problems",
                 round_index, record["auroc"] or float("nan"), len(rows), sum(labels),
                 record["held_out"]["probe"], record["held_out"]["logprob"],
                 record["held_out"]["problems"])
        return probe, record

    def admits(self, record: dict) -> tuple[bool, str]:
        """Whether a fitted probe may join the next selection, and why (for the report)."""
        if not self.use_in_selection:
            return False, "use_in_selection=false"
        if not self.require_beats_logprob:
            return True, "require_beats_logprob=false"
        held = record.get("held_out") or {}
        if held.get("helps"):
            return True, (f"held-out within-problem AUROC {held['probe']:.3f} beats log-prob "
                          f"{held['logprob']:.3f} on {held['problems']} problems")
        return False, (f"held-out within-problem AUROC {held.get('probe', float('nan')):.3f} "
                       f"does not beat log-prob {held.get('logprob', float('nan')):.3f} on "
                       f"{held.get('problems', 0)} problems (at least 3 needed)")

    @staticmethod
    def save(probe, path: Path, model) -> None:
        """Write the probe (with its base model's fingerprint) to ``path``."""
        from ucoder.probes import save_probe

        save_probe(probe, path, model=model)

    @staticmethod
    def load(path: str, model):
        """Read a probe saved by :meth:`save`, checked against ``model``."""
        from ucoder.probes import load_probe

        return load_probe(path, model)

    def scorer(self, model, tokenizer, probe) -> Callable[[list[str], list[str]], list[float]]:
        """``(prompt_texts, raw_texts) -> probabilities``: a round's ``extra_score``."""
        from ucoder.probes import ProbeScorer

        scorer = ProbeScorer(model, tokenizer, probe, batch_size=self.batch_size)

        def extra_score(prompt_texts: list[str], raw_texts: list[str]) -> list[float]:
            with _eval_mode(model):
                return scorer.score(prompt_texts, raw_texts)

        return extra_score


def held_out_ranking(probe, features, rows: Sequence[dict], labels: Sequence[bool],
                     index: Sequence[int]) -> dict:
    """Probe against mean log-prob, ranking the held-out rows within their problems."""
    import numpy as np
    import torch

    from ucoder.probes import beats_logprob

    index = np.asarray(index, dtype=int)
    with torch.no_grad():
        scores = probe(features[torch.as_tensor(index)]).float().flatten().tolist()
    logprobs = [float(rows[i].get("mean_logprob", float("nan"))) for i in index]
    return beats_logprob(scores, logprobs, [labels[i] for i in index],
                         [rows[i].get("problem_id") for i in index])


def _formatter(model, tokenizer) -> Callable[[str], str]:
    """The solution stage's generation context for an instruction (for old rows)."""
    from ucoder.generation import Sampler
    from ucoder.ipc.prompts import SOLUTION_PREFIX

    sampler = Sampler(model, tokenizer, show_progress=False)
    return lambda prompt: sampler.format_prompt(prompt, SOLUTION_PREFIX)


class _eval_mode:
    """Eval mode (no LoRA dropout) for the duration, then the mode it had."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)
