"""Stage 1 (problem generator); stage 2 (the rating) is :mod:`ucoder.ipc.rating`.

Problems are asked for across the paper's five categories and three difficulty levels,
each prompt with its own topic so a small model does not write the same problem twice;
answers are parsed (:func:`ucoder.ipc.prompts.parse_problem`), deduplicated
(:mod:`ucoder.ipc.dedup`, seeded with the prompt's own example and earlier rounds'
problems).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from ucoder.ipc.code import ParseError
from ucoder.ipc.dedup import Deduplicator
from ucoder.ipc.prompts import (
    CATEGORIES,
    DIFFICULTIES,
    PROBLEM_PREFIX,
    PROBLEM_STOP,
    RESULT_KINDS,
    TOPICS,
    parse_problem,
    problem_prompt,
)
from ucoder.records import Dropped, Problem

EXAMPLE_PROBLEM = ("Return how many vowels (a, e, i, o, u) the string s contains.",
                   "def count_vowels(s: str) -> int")


def problem_plan(count: int, seed: int = 0, kinds: bool = False) -> list[tuple[str, ...]]:
    """``count`` (category, difficulty, topic, kind) seeds: categories and levels cycle,
    topics (and, with ``kinds``, result kinds) are shuffled by ``seed`` so rounds with
    other seeds ask for other things; ``kind`` is '' without ``kinds``."""
    rng = random.Random(seed)
    topics = list(TOPICS)
    rng.shuffle(topics)
    pairs = [(t, k) for t in topics for k in (RESULT_KINDS if kinds else ("",))]
    if kinds:
        # Each topic once before any topic repeats (with another result kind).
        rng.shuffle(pairs)
        nth: Counter = Counter()
        ranked = []
        for topic, kind in pairs:
            ranked.append((nth[topic], topic, kind))
            nth[topic] += 1
        pairs = [(t, k) for _, t, k in sorted(ranked, key=lambda r: r[0])]
    return [(CATEGORIES[i % len(CATEGORIES)], DIFFICULTIES[(i // len(CATEGORIES)) % 3],
             *pairs[i % len(pairs)]) for i in range(count)]


def generate_problems(sampler, count: int, *, attempts: int | None = None, seed: int = 0,
                      temperature: float = 0.8, top_p: float = 0.95,
                      max_new_tokens: int = 160, avoid: Sequence[str] = (),
                      per_prompt: int = 1, kinds: bool = False
                      ) -> tuple[list[Problem], list[Dropped]]:
    """Ask for ``attempts`` problems (default 2 x ``count``); keep up to ``count``.

    Args:
        avoid: earlier problems' texts (:meth:`Deduplicator.avoid`); repeats of them drop.
        per_prompt: problems sampled per prompt (its prefill is shared by them).
        kinds: seed each prompt with a result kind beside its topic.

    Returns:
        ``(problems, dropped)``: unique problems with ids ``p0000``...; every answer not
        kept is a :class:`Dropped` with its reason (parse error, duplicate, surplus).
    """
    attempts = attempts if attempts is not None else 2 * count
    plan = problem_plan(math.ceil(attempts / per_prompt), seed, kinds)
    prompts = [problem_prompt(*seeds) for seeds in plan]
    groups = sampler.sample(prompts, per_prompt, temperature=temperature, top_p=top_p,
                            seed=seed, max_new_tokens=max_new_tokens, stop=list(PROBLEM_STOP),
                            prefix=PROBLEM_PREFIX)
    plan = [seeds for seeds, group in zip(plan, groups) for _ in group]
    samples = [[s] for group in groups for s in group]
    dedup = Deduplicator()
    dedup.seed([("the prompt's example", *EXAMPLE_PROBLEM)])
    dedup.avoid(avoid)
    kept: list[Problem] = []
    dropped: list[Dropped] = []
    for k, ((category, difficulty, *_), group) in enumerate(zip(plan, samples)):
        text = PROBLEM_PREFIX + group[0].text
        item = f"answer{k:04d}"
        try:
            fields = parse_problem(text)
        except ParseError as err:
            dropped.append(Dropped("problems", item, str(err), text))
            continue
        if len(kept) >= count:
            dropped.append(Dropped("problems", item, f"surplus beyond {count} problems", text))
            continue
        pid = f"p{len(kept):04d}"
        why = dedup.check(pid, fields["description"], fields["signature"])
        if why is not None:
            dropped.append(Dropped("problems", item, why, text))
            continue
        kept.append(Problem(id=pid, category=category, difficulty=difficulty, **fields))
    return kept, dropped
