"""Execution-consensus selection: cluster candidates by behaviour, pick one per problem.

Every part is configurable so the paper's ablation can be rerun (:class:`SelectionConfig`):

* **signature** — what makes two candidates "the same program":
  ``pass`` the pass/fail vector over the tests (the paper), ``output`` the behaviour
  hashes over the tests (the value of an expression test or the exception it raised;
  AlphaCode / MBR-exec), ``dual`` clusters by outputs and scores a cluster by the tests
  its members pass x sqrt(size) (CodeT) instead of by size alone.
* **policy** — ``ucoder`` (the paper): keep candidates with execution success >= rho,
  take the largest cluster (dual: best-scoring) of size >= tau, inside it the best
  success, then the lowest perplexity; ``random_passing`` a random candidate with success
  >= rho; ``low_perplexity`` the most fluent one with success >= rho; ``largest_cluster``
  the largest cluster with no success filter; ``success_rate`` the best success;
  ``any_parsable`` a random candidate that parses (no execution filter: the baseline that
  shows what execution adds). The policies live in one registry (:func:`list_policies`,
  :func:`apply_policy`) that rounds and ``ucoder eval`` share.

Execution success of a candidate = the share of its tests that passed (an assert held,
an expression ran without raising). A candidate with no test results (its code did not
run, or there were no tests) qualifies for nothing. Within-candidate ties are broken by
``mean_logprob + extra_weight * extra_score`` (higher = lower perplexity / better probe).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ucoder.ipc.policies import Evidence, Policy, get_policy, list_policies

SIGNATURES = ("pass", "output", "dual")


@dataclass
class SelectionConfig:
    """How one candidate is chosen per problem.

    Attributes:
        signature: ``pass`` | ``output`` | ``dual`` (see the module docstring).
        policy: a name from :func:`list_policies` (``ucoder``, ``random_passing``,
            ``low_perplexity``, ``largest_cluster``, ``success_rate``, ``any_parsable``).
        min_success: rho, the execution success a candidate needs (0..1).
        min_cluster: tau, the smallest cluster a cluster policy accepts (>= 1).
        extra_weight: weight of ``Candidate.extra_score`` (e.g. a probe's probability)
            added to the mean log-prob when candidates are ranked.
        seed: seeds ``random_passing`` and ``any_parsable``.
        ignore_dead_tests: leave out tests that no candidate passes before anything is
            computed. Such a test separates no candidates (in ``pass`` mode) and only
            lowers every success alike; with a small model it is usually a broken test
            (a wrong arity, ``len()`` of an int) that would fail every right solution.
    """

    signature: str = "pass"
    policy: str = "ucoder"
    min_success: float = 0.8
    min_cluster: int = 2
    extra_weight: float = 0.0
    seed: int = 0
    ignore_dead_tests: bool = True

    def __post_init__(self):
        if self.signature not in SIGNATURES:
            raise ValueError(f"signature={self.signature!r} is not allowed; "
                             f"choose one of {', '.join(SIGNATURES)}")
        get_policy(self.policy)  # an unknown name raises, listing the allowed
        if not isinstance(self.min_success, (int, float)) or not 0 <= self.min_success <= 1:
            raise ValueError(f"min_success={self.min_success!r} is not allowed; "
                             "use a number in [0, 1]")
        if isinstance(self.min_cluster, bool) or not isinstance(self.min_cluster, int) \
                or self.min_cluster < 1:
            raise ValueError(f"min_cluster={self.min_cluster!r} is not allowed; "
                             "use an integer >= 1")
        if not isinstance(self.ignore_dead_tests, bool):
            raise ValueError(f"ignore_dead_tests={self.ignore_dead_tests!r} is not allowed; "
                             "use True or False")
        if not isinstance(self.extra_weight, (int, float)) or not math.isfinite(
                self.extra_weight):
            raise ValueError(f"extra_weight={self.extra_weight!r} is not allowed; "
                             "use a finite number")


@dataclass
class Candidate:
    """One executed candidate: its code, fluency and per-test behaviour."""

    completion: str
    mean_logprob: float
    passed: list[bool] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)
    extra_score: float | None = None


@dataclass
class Selection:
    """The choice for one problem and the evidence behind it."""

    index: int | None
    reason: str
    clusters: list[list[int]]
    success: list[float]
    in_consensus: list[bool]
    live_tests: list[int] | None = None  # the tests used (None: all)


def candidate_from_result(completion: str, mean_logprob: float, result) -> Candidate:
    """A :class:`Candidate` from a sandbox ``Result`` (``None``: it was never run)."""
    tests = list(getattr(result, "tests", None) or [])
    return Candidate(completion=completion, mean_logprob=float(mean_logprob),
                     passed=[bool(t.passed) for t in tests], hashes=[t.hash for t in tests])


def execution_success(candidate: Candidate) -> float:
    """Share of tests passed (0.0 with no test results)."""
    return sum(candidate.passed) / len(candidate.passed) if candidate.passed else 0.0


def signature_of(candidate: Candidate, mode: str) -> tuple:
    """The behaviour key candidates are clustered on."""
    if mode == "pass":
        return tuple(bool(p) for p in candidate.passed)
    return tuple(candidate.hashes)


def cluster(candidates: Sequence[Candidate], mode: str) -> list[list[int]]:
    """Indices grouped by signature, largest first (ties: first appearance).

    Candidates with no test results are left out: "did not run" is not a behaviour.
    """
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.passed:
            groups.setdefault(signature_of(c, mode), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def drop_dead_tests(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[int]]:
    """Candidates restricted to the tests at least one of them passes, and those tests."""
    width = max((len(c.passed) for c in candidates), default=0)
    live = [j for j in range(width) if any(j < len(c.passed) and c.passed[j]
                                           for c in candidates)]
    if len(live) == width:
        return list(candidates), live
    out = []
    for c in candidates:
        keep = [j for j in live if j < len(c.passed)] if live else []
        out.append(dataclasses.replace(c, passed=[c.passed[j] for j in keep],
                                       hashes=[c.hashes[j] if j < len(c.hashes) else None
                                               for j in keep]))
    return out, live


POLICIES = tuple(p.name for p in list_policies())
CLUSTER_POLICIES = ("ucoder", "largest_cluster")
__all__ = ["CLUSTER_POLICIES", "POLICIES", "SIGNATURES", "Candidate", "Evidence", "Policy",
           "Selection", "SelectionConfig", "apply_policy", "candidate_from_result", "cluster",
           "drop_dead_tests", "execution_success", "get_policy", "list_policies", "select",
           "signature_of"]


def select(candidates: Sequence[Candidate], config: SelectionConfig) -> Selection:
    """Choose one candidate with the policy ``config.policy`` (see :func:`list_policies`)."""
    policy = get_policy(config.policy)
    live = None
    if config.ignore_dead_tests:
        candidates, live = drop_dead_tests(candidates)
    success = [execution_success(c) for c in candidates]
    clusters = cluster(candidates, config.signature)
    result = Selection(index=None, reason="", clusters=clusters, success=success,
                       in_consensus=[False] * len(candidates), live_tests=live)
    if not candidates:
        result.reason = "no candidates"
        return result
    if policy.needs_execution and live == []:
        result.reason = "no test passed by any candidate"
        return result
    if policy.needs_execution and not clusters:
        result.reason = "no candidate ran any test"
        return result
    rho = config.min_success
    eligible = [i for i, c in enumerate(candidates) if c.passed and success[i] >= rho - 1e-9]
    consensus, why = _consensus_cluster(candidates, clusters, eligible, config)
    for i in consensus or []:
        result.in_consensus[i] = True
    evidence = Evidence(list(candidates), config, success, eligible, consensus, why)
    result.index, result.reason = policy.choose(evidence)
    return result


def apply_policy(name: str, candidates: Sequence[Candidate],
                 config: SelectionConfig | None = None) -> Selection:
    """:func:`select` with policy ``name`` and the other settings of ``config``."""
    return select(candidates, dataclasses.replace(config or SelectionConfig(), policy=name))


def _consensus_cluster(candidates, clusters, eligible, config) -> tuple[list[int] | None, str]:
    """The winning cluster of a cluster policy, or None and why there is none.

    ``ucoder`` clusters only candidates with success >= rho; ``largest_cluster`` all of
    them. ``dual`` scores a cluster by tests passed x sqrt(size), the others by size.
    """
    keep = set(eligible) if config.policy != "largest_cluster" else None
    pool = [[i for i in g if keep is None or i in keep] for g in clusters]
    pool = [g for g in pool if g]
    if not pool:
        return None, f"no candidate with execution success >= {config.min_success:g}"
    big = [g for g in pool if len(g) >= config.min_cluster]
    if not big:
        largest = max(len(g) for g in pool)
        return None, f"no cluster >= min_cluster={config.min_cluster} (largest {largest})"

    def score(g: list[int]) -> tuple:
        passed = max(sum(candidates[i].passed) for i in g)
        size_score = passed * math.sqrt(len(g)) if config.signature == "dual" else len(g)
        best = max(sum(candidates[i].passed) / len(candidates[i].passed) for i in g)
        return (size_score, best, max(candidates[i].mean_logprob for i in g), -g[0])

    winner = max(big, key=score)
    kind = "best tests-passed x sqrt(size)" if config.signature == "dual" else "largest"
    return winner, (f"{kind} cluster of {len(winner)} (of {len(candidates)} candidates, "
                    f"{len(pool)} clusters)")
