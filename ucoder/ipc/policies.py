"""The registry of selection policies that rounds and ``ucoder eval`` share.

A policy is a small function from the :class:`Evidence` of one problem (its candidates,
their execution success, the eligible ones and the consensus cluster) to one pick and the
reason for it. :func:`ucoder.ipc.consensus.select` builds the evidence and applies the
policy named in the config; :func:`list_policies` is what help texts, ``ucoder eval`` and
config checks read, so a policy added here is available everywhere at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ucoder.ipc.consensus import Candidate, SelectionConfig


@dataclass
class Evidence:
    """What a policy chooses from: the candidates and what their execution showed.

    Attributes:
        candidates: the candidates (restricted to the live tests when dead ones are ignored).
        config: the selection settings.
        success: execution success per candidate.
        eligible: candidates that ran and reached ``min_success``.
        consensus: the winning cluster of the consensus rule (None: there is none).
        why: why that cluster won, or why there is none.
    """

    candidates: list[Candidate]
    config: SelectionConfig
    success: list[float]
    eligible: list[int]
    consensus: list[int] | None
    why: str

    def rank(self, i: int) -> tuple[float, float]:
        """Execution success, then fluency plus the weighted extra score (higher = better)."""
        c, weight = self.candidates[i], self.config.extra_weight
        extra = weight * c.extra_score if c.extra_score is not None else 0.0
        return (self.success[i], c.mean_logprob + extra)


@dataclass(frozen=True)
class Policy:
    """One selection policy of the registry (see :func:`list_policies`).

    Attributes:
        name: the value of ``SelectionConfig.policy`` / ``ucoder eval --select``.
        description: one line, for help texts and reports.
        choose: ``Evidence -> (index or None, reason)``.
        needs_execution: reads test results (a caller must run tests first).
        uses_extra_score: ``extra_weight * extra_score`` (e.g. a probe) can change its pick.
    """

    name: str
    description: str
    choose: Callable[[Evidence], tuple[int | None, str]]
    needs_execution: bool = True
    uses_extra_score: bool = True


_REGISTRY: dict[str, Policy] = {}


def _register(name: str, description: str, *, needs_execution: bool = True,
              uses_extra_score: bool = True):
    def add(fn: Callable[[Evidence], tuple[int | None, str]]):
        _REGISTRY[name] = Policy(name, description, fn, needs_execution, uses_extra_score)
        return fn
    return add


def list_policies() -> list[Policy]:
    """Every selection policy rounds and ``ucoder eval`` share, in registry order."""
    return list(_REGISTRY.values())


def get_policy(name: str) -> Policy:
    """The registered policy called ``name``; an unknown name raises, listing the allowed."""
    if name not in _REGISTRY:
        raise ValueError(f"policy={name!r} is not allowed; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _cluster_pick(ev: Evidence) -> tuple[int | None, str]:
    if ev.consensus is None:
        return None, ev.why
    return max(ev.consensus, key=lambda i: (ev.rank(i), -i)), ev.why


def _need_eligible(choose):
    """Wrap a filter policy: with no candidate reaching ``min_success`` it declines."""
    def wrapped(ev: Evidence) -> tuple[int | None, str]:
        if not ev.eligible:
            return None, f"no candidate with execution success >= {ev.config.min_success:g}"
        return choose(ev)
    return wrapped


_register("ucoder", "the paper: largest cluster of candidates with success >= rho "
          "(size >= tau), then best success, then lowest perplexity")(_cluster_pick)


@_register("random_passing", "a random candidate with success >= rho (seeded)",
           uses_extra_score=False)
@_need_eligible
def _random_passing(ev: Evidence) -> tuple[int | None, str]:
    rho = ev.config.min_success
    return (random.Random(ev.config.seed).choice(ev.eligible),
            f"random among {len(ev.eligible)} with success >= {rho:g}")


@_register("low_perplexity", "the most fluent candidate with success >= rho")
@_need_eligible
def _low_perplexity(ev: Evidence) -> tuple[int | None, str]:
    rho = ev.config.min_success
    return (max(ev.eligible, key=lambda i: (ev.rank(i)[1], -i)),
            f"lowest perplexity among {len(ev.eligible)} with success >= {rho:g}")


_register("largest_cluster", "the largest cluster with no success filter, then best "
          "success, then lowest perplexity")(_cluster_pick)


@_register("success_rate", "the best execution success, then the lowest perplexity")
@_need_eligible
def _success_rate(ev: Evidence) -> tuple[int | None, str]:
    best = max(ev.eligible, key=lambda i: (ev.rank(i), -i))
    return best, f"best success ({ev.success[best]:.2f}), then lowest perplexity"


@_register("any_parsable", "a random candidate whose code parses, no execution filter "
           "(seeded)", needs_execution=False, uses_extra_score=False)
def _any_parsable(ev: Evidence) -> tuple[int | None, str]:
    from ucoder.ipc.code import parses

    ok = [i for i, c in enumerate(ev.candidates) if parses(c.completion)]
    if not ok:
        return None, "no candidate parses"
    # Seeded by the candidates too, so problems of equal size do not all draw one index.
    texts = "\0".join(c.completion for c in ev.candidates)
    return random.Random(f"{ev.config.seed}\0{texts}").choice(ok), \
        f"random among {len(ok)} that parse"


def probe_key(ev: Evidence, i: int) -> float:
    """A candidate's probe score (``extra_score``); unscored candidates rank last."""
    score = ev.candidates[i].extra_score
    return float("-inf") if score is None else float(score)


@_register("probe", "the highest probe score (Candidate.extra_score), then lowest "
           "perplexity; no execution", needs_execution=False)
def _probe(ev: Evidence) -> tuple[int | None, str]:
    scored = [i for i, c in enumerate(ev.candidates) if c.extra_score is not None]
    if not scored:
        return None, "no candidate has a probe score"
    best = max(scored, key=lambda i: (probe_key(ev, i), ev.candidates[i].mean_logprob, -i))
    return best, f"highest probe score ({probe_key(ev, best):.3f}) of {len(scored)}"


@_register("ucoder+probe", "the paper's cluster (success >= rho, size >= tau); inside it "
           "the best success, then the highest probe score, then lowest perplexity")
def _ucoder_probe(ev: Evidence) -> tuple[int | None, str]:
    # The probe replaces fluency as the tie-break inside the winning cluster; with no
    # cluster the policy declines, so a round drops the problem and ``ucoder eval`` takes
    # the fallback ladder (ucoder.evaluation.selection), where the probe decides.
    if ev.consensus is None:
        return None, ev.why
    best = max(ev.consensus, key=lambda i: (ev.success[i], probe_key(ev, i),
                                            ev.candidates[i].mean_logprob, -i))
    return best, ev.why + ", probe breaks ties"
