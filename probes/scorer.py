"""Score (prompt, completion) pairs with a probe, reading its own base model's states.

The scorer does not care who wrote the completion: another model's candidates or a
human's code are read by the probe's base model, so a probe works as a verifier for any
generator.
"""

from __future__ import annotations

from collections.abc import Sequence

from ucoder.probes.extract import Completion, extract_features
from ucoder.probes.io import check_compatible
from ucoder.probes.modules import ProbeModule


class ProbeScorer:
    """Probability that each completion is correct, according to ``probe``.

    Args:
        model: the probe's base model (any HF causal LM; 4-bit and PEFT work).
        tokenizer: its tokenizer.
        probe: a fitted or loaded probe; its ``meta`` names the layer and token position.
        batch_size: rows per forward pass.
        strict: also require the same architecture fingerprint (not only the hidden size).
        add_special_tokens: as for :func:`extract_features` (``None``: automatic).
    """

    def __init__(
        self,
        model,
        tokenizer,
        probe: ProbeModule,
        *,
        batch_size: int = 8,
        strict: bool = True,
        add_special_tokens: bool | None = None,
    ):
        check_compatible(probe, model, strict=strict)
        self.model, self.tokenizer, self.probe = model, tokenizer, probe
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens
        self.layer = int(probe.meta.get("layer", -1))
        self.position = probe.meta.get("position", "last_completion")

    def score(self, prompts: Sequence[str], completions: Sequence[Completion]) -> list[float]:
        """One probability in [0, 1] per (prompt, completion) pair, in input order."""
        if not prompts:
            return []
        feats = extract_features(
            self.model,
            self.tokenizer,
            prompts,
            completions,
            layers=[self.layer],
            position=self.position,
            batch_size=self.batch_size,
            add_special_tokens=self.add_special_tokens,
        )
        return self.probe.predict_proba(feats[:, 0]).tolist()
