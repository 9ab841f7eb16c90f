"""RefitProbe: retrain the correctness probe on each round's consensus labels.

The labels need no ground truth: a candidate is positive when it belongs to the winning
execution-consensus cluster of its problem (``consensus.jsonl``, field ``in_consensus``).
The probe reads the hidden states of the very model being trained, so it is refit every
round; with ``use_in_selection`` its probability becomes the ``extra_score`` of the next
round's selection (weighted by ``selection.extra_weight`` in the round config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ucoder.callbacks.base import RoundListener, find_callback, log, loop_dir
from ucoder.jsonl import read_jsonl


class RefitProbe(RoundListener):
    """Fit a hidden-state probe on every round's consensus labels.

    Args:
        layer: hidden-state index (0 = embeddings, -1 = last block).
        position: ``last_completion``, ``last_prompt`` or ``mean_completion``.
        kind: ``linear`` or ``mlp``.
        use_in_selection: hand the probe's scores to the next round's selection.
        min_examples: fewer labelled candidates than this (or one class only): skip.
        max_epochs: upper bound of the probe's training epochs (early stopping on val).
        batch_size: rows per forward pass when reading hidden states.
        out_dir: where ``probes/round_<k>/`` goes (default: the Trainer's root dir).
        seed: split and initialisation seed.
    """

    def __init__(self, layer: int = -1,
                 position: Literal["last_completion", "last_prompt",
                                   "mean_completion"] = "last_completion",
                 kind: Literal["linear", "mlp"] = "linear", use_in_selection: bool = False,
                 min_examples: int = 8, max_epochs: int = 100, batch_size: int = 8,
                 out_dir: str | None = None, seed: int = 0):
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind={kind!r} is not allowed: expected 'linear' or 'mlp'")
        self.layer, self.position, self.kind = layer, position, kind
        self.use_in_selection = use_in_selection
        self.min_examples, self.max_epochs, self.batch_size = min_examples, max_epochs, batch_size
        self.out_dir, self.seed = out_dir, seed
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        fitted = [h for h in self.history if h.get("path")]
        if self.use_in_selection and fitted:  # resumed: selection uses the last probe again
            from ucoder.probes import load_probe

            self._plug_in(trainer, pl_module, load_probe(fitted[-1]["path"], pl_module.model))

    def on_round_end(self, trainer, pl_module, round_index: int, round_dir: Path,
                     stats: dict) -> None:
        rows = read_jsonl(round_dir / "consensus.jsonl") if (
            round_dir / "consensus.jsonl").exists() else []
        labels = [bool(r.get("in_consensus")) for r in rows]
        record: dict[str, Any] = {"round": round_index, "candidates": len(rows),
                                  "positives": sum(labels)}
        if len(rows) < self.min_examples or len(set(labels)) < 2:
            record["skipped"] = (f"{len(rows)} candidates, {sum(labels)} positive: need "
                                 f">= {self.min_examples} and both classes")
            log.info("probe round %d: skipped (%s)", round_index, record["skipped"])
            self.history.append(record)
            return
        probe, metrics = self._fit(trainer, pl_module, rows, labels, round_index)
        record.update({k: float(v) for k, v in metrics.items()})
        record["auroc"] = metrics.get("val/auroc", metrics.get("train/auroc"))
        path = loop_dir(trainer, self.out_dir) / "probes" / f"round_{round_index}"
        if trainer.is_global_zero:
            from ucoder.probes import save_probe

            save_probe(probe, path, model=pl_module.model)
        trainer.strategy.barrier("ucoder_probe_saved")
        record["path"] = str(path)
        self.history.append(record)
        log.info("probe round %d: consensus-label AUROC %.3f (%d candidates, %d positive)",
                 round_index, record["auroc"] or float("nan"), len(rows), sum(labels))
        if self.use_in_selection:
            self._plug_in(trainer, pl_module, probe)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    # -- helpers -----------------------------------------------------------------------------
    def _texts(self, pl_module, prompts: list[str]) -> list[str]:
        """The text the model reads before a completion: its chat-formatted prompt."""
        from ucoder.generation import Sampler

        sampler = Sampler(pl_module.model, pl_module.tokenizer, show_progress=False)
        return [sampler.format_prompt(p) for p in prompts]

    def _fit(self, trainer, pl_module, rows, labels, round_index):
        from ucoder.probes import extract_features, fit_probe

        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            feats = extract_features(model, pl_module.tokenizer,
                                     self._texts(pl_module, [r["prompt"] for r in rows]),
                                     [r["completion"] for r in rows], layers=[self.layer],
                                     position=self.position, batch_size=self.batch_size)
        finally:
            model.train(was_training)
        return fit_probe(feats[:, 0], labels, [r.get("problem_id") for r in rows],
                         kind=self.kind, max_epochs=self.max_epochs, seed=self.seed,
                         layer=self.layer, position=self.position,
                         meta={"round": round_index, "labels": "in_consensus"})

    def _plug_in(self, trainer, pl_module, probe) -> None:
        from ucoder.callbacks.regenerate import RegenerateData
        from ucoder.probes import ProbeScorer

        regenerate = find_callback(trainer, RegenerateData)
        if regenerate is None:
            return
        scorer = ProbeScorer(pl_module.model, pl_module.tokenizer, probe,
                             batch_size=self.batch_size)

        def extra_score(prompts: list[str], completions: list[str]) -> list[float]:
            model = pl_module.model
            was_training = model.training
            model.eval()
            try:
                return scorer.score(self._texts(pl_module, prompts), completions)
            finally:
                model.train(was_training)

        regenerate.extra_score = extra_score
