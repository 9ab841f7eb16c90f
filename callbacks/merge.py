"""Combining round outputs: DDP shards into one round, rounds into one training file."""

from __future__ import annotations

from pathlib import Path

from ucoder.jsonl import read_json, read_jsonl, write_json, write_jsonl

MERGED_FILES = ("selected.jsonl", "consensus.jsonl")
# A shard's mean and the count it is a mean over (a path into the same stats dict): the
# merged mean weighs each shard by that count, so a shard with one candidate does not
# count as much as one with a hundred.
MEAN_WEIGHTS: dict[str, tuple[str, ...]] = {
    "mean_execution_success": ("counts", "consensus_rows"),
}
# Wall-clock times: the shards run side by side, so the round took as long as the slowest.
WALL_TIMES = ("seconds", "seconds_total")


def merge_shards(round_dir: Path, shard_dirs: list[Path]) -> dict:
    """Concatenate the shards' selected/consensus rows (problem ids prefixed by shard) and
    merge their stats (:func:`merge_stats`) into ``round_dir``; returns the merged stats."""
    for name in MERGED_FILES:
        rows = []
        for k, shard in enumerate(shard_dirs):
            if (shard / name).exists():
                for row in read_jsonl(shard / name):
                    row["problem_id"] = f"rank{k}/{row.get('problem_id')}"
                    rows.append(row)
        write_jsonl(round_dir / name, rows)
    shard_stats = [read_json(shard / "stats.json", {}) for shard in shard_dirs]
    merged = merge_stats(shard_stats)
    merged["shards"] = shard_stats
    write_json(round_dir / "stats.json", merged)
    return merged


def merge_stats(parts: list[dict]) -> dict:
    """One ``stats.json`` from the shards' ones.

    Counts are summed (recursively through dicts), wall times (:data:`WALL_TIMES`) take
    the maximum, means (:data:`MEAN_WEIGHTS`) are averaged weighted by the count each is
    a mean over (shards without one are left out), anything else keeps its first value.
    """
    out = _combine(parts)
    for key, weight_path in MEAN_WEIGHTS.items():
        pairs = [(p[key], _lookup(p, weight_path)) for p in parts
                 if isinstance(p.get(key), (int, float)) and not isinstance(p.get(key), bool)]
        total = sum(w for _, w in pairs)
        if key in out:
            out[key] = round(sum(m * w for m, w in pairs) / total, 4) if total else None
    return out


def _combine(parts: list[dict], wall_time: bool = False) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            wall = wall_time or key in WALL_TIMES
            if isinstance(value, dict):
                previous = out.get(key) if isinstance(out.get(key), dict) else {}
                out[key] = _combine([previous, value], wall)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                if out.get(key) is None:
                    out[key] = value
            elif not isinstance(out.get(key), (int, float)):
                out[key] = value
            else:
                out[key] = max(out[key], value) if wall else out[key] + value
    return out


def _lookup(stats: dict, path: tuple[str, ...]) -> float:
    value = stats
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return float(value) if isinstance(value, (int, float)) else 0.0


def cumulative_pairs(previous: list[dict], selected: list[dict], *, keep_previous: bool,
                     round_index: int) -> tuple[list[dict], int]:
    """The next training set and how many of ``selected`` it did not hold already.

    Pairs are identified by (prompt, completion); with ``keep_previous`` the earlier
    pairs stay first, otherwise only this round's (deduplicated) pairs are kept.
    """
    seen = {(p["prompt"], p["completion"]) for p in previous}
    fresh: dict[tuple[str, str], dict] = {}
    for row in selected:
        fresh.setdefault((row["prompt"], row["completion"]), {**row, "round": round_index})
    new = [row for key, row in fresh.items() if key not in seen]
    return (list(previous) + new if keep_previous else list(fresh.values())), len(new)
