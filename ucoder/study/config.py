"""The settings of a study (:class:`StudyConfig`); the fits' settings are a `ucoder fit` config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MAIN_POLICY = "ucoder"
DEFAULT_ABLATION = ("ucoder", "random_passing", "low_perplexity", "largest_cluster",
                    "any_parsable")


@dataclass
class StudyConfig:
    """What the study measures and how long it may take.

    Attributes:
        out_dir: where every file of the study goes (``study.json``, ``main/``, ``arms/``).
        rounds: rounds of the main arm (on-policy: each round samples with the adapter
            trained so far).
        epochs_per_round: training epochs on each round's pairs (all fits alike).
        ablation: selection policies of the one-round ablation; each selects its own
            pairs from round 0's candidate pool and trains one round from the base.
        benchmark: ``humaneval`` or an MBPP-style JSONL path; every evaluation is greedy
            pass@1 on all of it unless ``limit`` is set.
        limit: evaluate the first ``limit`` problems only (tests, calibration).
        max_new_tokens: completion length cap in evaluations.
        eval_batch_size: rows decoded together in evaluations.
        timeout: sandbox seconds per benchmark problem.
        n_boot: bootstrap resamples of every interval.
        alpha: 1 - the intervals' coverage; also the significance level of the primary test.
        seed: seed of every fit (each starts from the same base with this seed), the
            sampling and the bootstrap.
        threads: torch CPU threads (None: torch's default).
        generation: what evaluations decode with: ``merged_copy`` (the trained 4-bit
            weights de-quantized with the adapter merged in: the same model, decoded
            faster) or ``training_weights`` (the 4-bit model with its adapter as is).
    """

    out_dir: str = "runs/study"
    rounds: int = 3
    epochs_per_round: int = 1
    ablation: list[str] = field(default_factory=lambda: list(DEFAULT_ABLATION))
    benchmark: str = "humaneval"
    limit: int | None = None
    max_new_tokens: int = 384
    eval_batch_size: int = 64
    timeout: float = 5.0
    n_boot: int = 10_000
    alpha: float = 0.05
    seed: int = 0
    threads: int | None = None
    generation: Literal["merged_copy", "training_weights"] = "merged_copy"

    def __post_init__(self):
        for name in ("rounds", "epochs_per_round", "max_new_tokens", "eval_batch_size",
                     "n_boot"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"study.{name}={value!r} is not allowed; use an integer >= 1")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"study.limit={self.limit!r} is not allowed; use null or >= 1")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"study.alpha={self.alpha!r} is not allowed; use (0, 0.5)")
        if self.generation not in ("merged_copy", "training_weights"):
            raise ValueError(f"study.generation={self.generation!r} is not allowed; use "
                             "'merged_copy' or 'training_weights'")
        if len(set(self.ablation)) != len(self.ablation):
            raise ValueError(f"study.ablation={self.ablation!r} names a policy twice")
        from ucoder.ipc.consensus import list_policies

        allowed = [policy.name for policy in list_policies()]
        unknown = [p for p in self.ablation if p not in allowed]
        if unknown:
            raise ValueError(f"study.ablation has unknown policies {unknown}; allowed: "
                             f"{', '.join(allowed)}")
