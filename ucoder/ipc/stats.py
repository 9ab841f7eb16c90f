"""``stats.json`` of a round, computed from its files (so a resumed round has full stats)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ucoder.ipc.pairs import check_pair
from ucoder.jsonl import read_jsonl


def reason_kind(reason: str) -> str:
    """A drop reason without its specifics, for counting (ids, numbers, parentheses)."""
    kind = reason.split(" (")[0]
    kind = re.sub(r"\bp\d{4}\b", "<id>", kind)
    return re.sub(r"\d+(\.\d+)?", "N", kind)


# The stages whose time is the model's (sampling and scoring); executions and selection
# are the sandbox's and the CPU's.
GENERATION_STAGES = ("problems", "rated", "skeletons", "tests", "candidates")


def clean_pairs(rows: list[dict]) -> int:
    """How many training pairs are clean (:func:`ucoder.ipc.pairs.check_pair`, the
    static check: the sandbox one runs in ``check_pairs``)."""
    return sum(check_pair(r) is None for r in rows)


def pairs_per_generation_minute(clean: int, timings: dict) -> float | None:
    """Clean selected pairs per minute of the generation stages (None before they ran)."""
    seconds = sum(timings.get(s) or 0 for s in GENERATION_STAGES)
    return round(clean / (seconds / 60), 3) if seconds else None


def rating_stats(ratings: list[dict], selected: list[dict], consensus: list[dict]) -> dict:
    """The rating's score distribution, and how the problems it would drop fared.

    Per group (``would_drop`` / ``kept``): problems, the share selected, and the mean
    largest-cluster share (largest cluster / candidates; 0 for a problem that never
    reached the candidates or had no cluster).
    """
    if not ratings:
        return {}
    scores = [r["rating"] for r in ratings]
    chosen = {r["problem_id"] for r in selected}
    candidates, largest = Counter(), Counter()
    for r in consensus:
        candidates[r["problem_id"]] += 1
        largest[r["problem_id"]] = max(largest[r["problem_id"]], r["cluster_size"])
    groups = {}
    for name, flag in (("would_drop", True), ("kept", False)):
        ids = [r["problem_id"] for r in ratings if r["would_drop"] == flag]
        shares = [largest[i] / candidates[i] if candidates[i] else 0.0 for i in ids]
        groups[name] = {"problems": len(ids),
                        "selected_rate": _mean([i in chosen for i in ids]),
                        "largest_cluster_share": _mean(shares)}
    histogram = Counter(min(int(s), 9) for s in scores)  # bins [k, k+1); 10 joins [9, 10]
    return {"problems": len(scores), "mean": _mean(scores), "min": min(scores),
            "max": max(scores),
            "histogram": {f"{k}-{k + 1}": histogram[k] for k in sorted(histogram)},
            "would_drop": groups["would_drop"]["problems"],
            "would_drop_share": round(groups["would_drop"]["problems"] / len(scores), 4),
            "groups": groups}


def _mean(values) -> float | None:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4) if values else None


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def example_stats(selected: list[dict]) -> dict:
    """Docstring examples of the selected pairs after :mod:`ucoder.ipc.agreement`:
    totals of agreed/rewritten/removed/added, and prompts that changed."""
    counts = Counter()
    for row in selected:
        counts.update(row.get("scores", {}).get("examples") or {})
    changed = sum(any(row.get("scores", {}).get("examples", {}).get(k)
                      for k in ("rewritten", "removed", "added")) for row in selected)
    return {k: counts.get(k, 0) for k in ("agreed", "rewritten", "removed", "added")} | {
        "prompts_rewritten": changed}


def round_stats(out: Path, stages: Sequence[str], timings: dict,
                data: dict[str, list[dict]]) -> dict:
    """Counts per stage, drop reasons per stage, cluster sizes, seconds per stage, the
    rating's distribution (:func:`rating_stats`) and clean pairs per generation minute.

    ``data``: every stage's kept rows (read or made by the runner); the drop records and
    ``consensus.jsonl`` are read from ``out``.
    """
    counts = {s: len(data[s]) for s in stages}
    dropped = {}
    for s in stages:
        kinds = Counter(reason_kind(d["reason"]) for d in _rows(out / f"{s}.dropped.jsonl"))
        if kinds:
            dropped[s] = dict(kinds.most_common())
    tests, executions = data["tests"], data["executions"]
    consensus = _rows(out / "consensus.jsonl")
    sizes: Counter = Counter()
    members = Counter((r["problem_id"], r["cluster_size"]) for r in consensus
                      if r["cluster_size"])
    for (_, size), n in members.items():  # one count per cluster of that size
        sizes[size] += n // size
    skeletons = Counter(str(p.get("skeleton_source", "")).split(":")[0]
                        for p in data["skeletons"])
    success = [r["execution_success"] for r in consensus]
    clean = clean_pairs(data["selected"])
    return {
        "selected": counts.get("selected", 0),
        "clean_selected": clean,
        "pairs_per_generation_minute": pairs_per_generation_minute(clean, timings),
        "rating": rating_stats(_rows(out / "ratings.jsonl"), data["selected"], consensus),
        "counts": counts | {"test_snippets": sum(len(t["tests"]) for t in tests),
                            "consensus_rows": len(consensus),
                            "in_consensus": sum(r["in_consensus"] for r in consensus)},
        "dropped": dropped,
        "dropped_total": sum(sum(v.values()) for v in dropped.values()),
        "cluster_size_histogram": {str(k): v for k, v in sorted(sizes.items())},
        "execution_status": dict(Counter(e["status"] for e in executions).most_common()),
        "mean_execution_success": round(sum(success) / len(success), 4) if success else None,
        "skeleton_sources": dict(skeletons),
        "examples": example_stats(data["selected"]),
        "seconds": {s: timings.get(s) for s in stages},
        "seconds_total": round(sum(v for v in timings.values() if v), 2),
    }
