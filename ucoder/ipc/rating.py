"""Stage 2 (quality oracle): a problem's rating from the model's token probabilities.

The model is shown the problem and the rating prompt's anchors and asked to continue
``Score:``. Instead of reading the greedy text (which a small model copies from the
prompt: every problem got the same score), each score ``k`` in 1..10 is scored as the
continuation ``" k/10"`` with :meth:`GenerationBackend.score`; the probabilities are
renormalised over the ten scores and the rating is their expected value.

The drop rule, fixed before any round was measured:

* **Rank within the round.** The lowest-rated ``drop_share`` of a round's problems
  (rounded down) drop. A 135M model's expected scores sit in a narrow band whose place
  on the scale says little (its calibration is unknown and changes as it trains), so an
  absolute cut would drop all problems or none by accident of calibration; the ranking
  within one round is the part that can carry information. A quarter is small enough
  that a useless ranking costs a round only a quarter of its problems (the problems
  stage makes that many more, at a fraction of a problem's later cost), and large
  enough that the report-only comparison has a group to compare. Problems tied with the
  cut are kept, so a rating that cannot tell problems apart drops nothing.
* **An absolute floor.** An expected score under ``min_rating`` drops whatever the
  rank: the model itself is confident the problem is unusable.

In ``report`` mode nothing drops; every problem's would-drop verdict is written to
``ratings.jsonl`` so a round shows whether the problems the rule would drop fare worse
(selection rate, cluster size) than those it keeps (:func:`ucoder.ipc.stats.rating_stats`).
"""

from __future__ import annotations

import math

from ucoder.ipc.config import RATING_MODES
from ucoder.ipc.prompts import RATING_CONTINUATIONS, RATING_PREFIX, RATING_SCORES, rating_prompt
from ucoder.records import Dropped, Problem


def expected_scores(sampler, problems: list[Problem]) -> list[dict]:
    """Per problem: ``expected`` score, the renormalised ``probs`` over 1..10 and the
    ``mass`` the model puts on the ten score continuations at all."""
    if not problems:
        return []
    logps = sampler.score([rating_prompt(p) for p in problems],
                          [list(RATING_CONTINUATIONS)] * len(problems), prefix=RATING_PREFIX)
    out = []
    for row in logps:
        top = max(row)
        weights = [math.exp(x - top) for x in row]
        total = sum(weights)
        probs = [w / total for w in weights]
        out.append({"expected": sum(k * p for k, p in zip(RATING_SCORES, probs)),
                    "probs": [round(p, 4) for p in probs],
                    "mass": math.exp(top) * total})
    return out


def drop_reasons(scores: list[float], *, drop_share: float,
                 min_rating: float) -> list[str | None]:
    """The drop rule (module docstring): per score, None (keep) or the reason to drop."""
    reasons: list[str | None] = [None] * len(scores)
    cut = math.floor(len(scores) * drop_share)
    if cut:
        ranked = sorted(scores)
        boundary = ranked[cut]  # the lowest score that is kept by rank
        for k, s in enumerate(scores):
            if s < boundary:
                reasons[k] = (f"rating {s:.2f} in the lowest {drop_share:.0%} of the round "
                              f"(kept from {boundary:.2f})")
    for k, s in enumerate(scores):
        if s < min_rating:
            reasons[k] = f"rating {s:.2f} < min_rating {min_rating:g}"
    return reasons


def problem_pool(problems: int, drop_share: float) -> int:
    """How many problems the problems stage keeps so ``problems`` remain after the rating."""
    return math.ceil(problems / (1 - drop_share))


def rate_problems(sampler, problems: list[Problem], *, mode: str = "filter",
                  drop_share: float = 0.25, min_rating: float = 3.0
                  ) -> tuple[list[Problem], list[Dropped], list[dict]]:
    """Rate every problem; drop by the rule in ``filter`` mode, only flag in ``report``.

    Returns:
        ``(kept, dropped, ratings)``: ``ratings`` has one row per problem
        (``problem_id``, ``rating``, ``probs``, ``mass``, ``would_drop``, ``reason``).
    """
    if mode not in RATING_MODES:
        raise ValueError(f"rating_mode={mode!r} is not allowed; choose one of "
                         f"{', '.join(RATING_MODES)}")
    rated = expected_scores(sampler, problems)
    reasons = drop_reasons([r["expected"] for r in rated], drop_share=drop_share,
                           min_rating=min_rating)
    kept, dropped, rows = [], [], []
    for p, r, why in zip(problems, rated, reasons):
        p.rating = round(r["expected"], 3)
        p.rating_reason = (f"expected score over 1-10 from token probabilities "
                           f"(mass on the scores {r['mass']:.2f})")
        rows.append({"problem_id": p.id, "rating": p.rating, "probs": r["probs"],
                     "mass": round(r["mass"], 4), "would_drop": why is not None,
                     "reason": why or ""})
        if why is not None and mode == "filter":
            dropped.append(Dropped("rated", p.id, why))
        else:
            kept.append(p)
    return kept, dropped, rows
