"""The records that flow between the IPC stages, and their JSONL form.

A :class:`Problem` grows as it passes the stages (rating, then skeleton); each stage
file holds the problems that survived it. A :class:`Dropped` row says what was lost,
where and why; every stage writes its drops to ``<stage>.dropped.jsonl``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

TEXT_KEPT = 600  # characters of a dropped item's raw text kept for inspection


@dataclass
class Problem:
    """One generated programming problem.

    Attributes:
        id: stable id within a round (``p0003``).
        title, description, hint: as the model wrote them.
        signature: ``def name(args) -> type`` without the colon; parses with ``ast``.
        entry_point: the function's name.
        examples: calls with their expected result, e.g. ``f(3) == 9``.
        category, difficulty: what the problem prompt asked for.
        rating, rating_reason: the model's own quality score (1-10) and its reason.
        skeleton: imports + typed signature + docstring; the prompt of later stages.
        skeleton_source: ``model`` (the model wrote the docstring) or ``derived``.
    """

    id: str
    title: str
    description: str
    signature: str
    entry_point: str
    examples: list[str] = field(default_factory=list)
    hint: str = ""
    category: str = ""
    difficulty: str = ""
    rating: float | None = None
    rating_reason: str = ""
    skeleton: str = ""
    skeleton_source: str = ""

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> Problem:
        """Build from a JSONL row; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(row) - names)
        if unknown:
            raise ValueError(f"problem row has unknown keys {unknown}; allowed: {sorted(names)}")
        return cls(**row)


@dataclass
class Dropped:
    """An item a stage did not keep: which stage, which item, why, and its raw text."""

    stage: str
    item: str
    reason: str
    text: str = ""

    def to_row(self) -> dict:
        return {"stage": self.stage, "item": self.item, "reason": self.reason,
                "text": self.text[:TEXT_KEPT]}
