"""``stats.json`` of a round, computed from its files (so a resumed round has full stats)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ucoder.jsonl import read_jsonl


def reason_kind(reason: str) -> str:
    """A drop reason without its specifics, for counting (ids, numbers, parentheses)."""
    kind = reason.split(" (")[0]
    kind = re.sub(r"\bp\d{4}\b", "<id>", kind)
    return re.sub(r"\d+(\.\d+)?", "N", kind)


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def round_stats(out: Path, stages: Sequence[str], timings: dict,
                data: dict[str, list[dict]]) -> dict:
    """Counts per stage, drop reasons per stage, cluster sizes, seconds per stage.

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
    return {
        "selected": counts.get("selected", 0),
        "counts": counts | {"test_snippets": sum(len(t["tests"]) for t in tests),
                            "consensus_rows": len(consensus),
                            "in_consensus": sum(r["in_consensus"] for r in consensus)},
        "dropped": dropped,
        "dropped_total": sum(sum(v.values()) for v in dropped.values()),
        "cluster_size_histogram": {str(k): v for k, v in sorted(sizes.items())},
        "execution_status": dict(Counter(e["status"] for e in executions).most_common()),
        "mean_execution_success": round(sum(success) / len(success), 4) if success else None,
        "skeleton_sources": dict(skeletons),
        "seconds": {s: timings.get(s) for s in stages},
        "seconds_total": round(sum(v for v in timings.values() if v), 2),
    }
