"""Combining round outputs: DDP shards into one round, rounds into one training file."""

from __future__ import annotations

from pathlib import Path

from ucoder.jsonl import read_json, read_jsonl, write_json, write_jsonl

MERGED_FILES = ("selected.jsonl", "consensus.jsonl")


def merge_shards(round_dir: Path, shard_dirs: list[Path]) -> dict:
    """Concatenate the shards' selected/consensus rows (problem ids prefixed by shard) and
    sum their numeric stats into ``round_dir``; returns the merged stats."""
    for name in MERGED_FILES:
        rows = []
        for k, shard in enumerate(shard_dirs):
            if (shard / name).exists():
                for row in read_jsonl(shard / name):
                    row["problem_id"] = f"rank{k}/{row.get('problem_id')}"
                    rows.append(row)
        write_jsonl(round_dir / name, rows)
    shard_stats = [read_json(shard / "stats.json") or {} for shard in shard_dirs]
    merged = sum_stats(shard_stats)
    merged["shards"] = shard_stats
    write_json(round_dir / "stats.json", merged)
    return merged


def sum_stats(parts: list[dict]) -> dict:
    """Add numbers (recursively through dicts); keep the first value of anything else."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
                out.setdefault(key, value)
            elif isinstance(value, dict):
                out[key] = sum_stats([out.get(key, {}), value])
            else:
                out[key] = out.get(key, 0) + value
    return out


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

