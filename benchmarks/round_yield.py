"""Clean training pairs per generation minute: the round code at an old commit vs today's.

    nice python benchmarks/round_yield.py --seeds 1 2 3 [--old de25d68] [--new HEAD]
                                          [--report-seed 1]

Each version runs ``python -m ucoder round`` from its own tree: both commits are
unpacked with ``git archive`` (so uncommitted edits in the checkout do not count), the
subprocess runs with that tree as cwd and first on ``PYTHONPATH``, and the script
checks which ``ucoder`` it imported. Same settings for
both: the embedded model, 12 problems, 8 samples, 8 tests, 1 torch thread, the round's
default ``SelectionConfig`` (checked equal in the two ``round.json`` files). The two
versions take turns, the first one alternating by seed, so machine load drifts hit both.

A pair counts only if it is clean by the new tree's checker,
``ucoder.ipc.pairs.check_pairs``: the static check (parses, defines the entry point once,
nothing else at top level, a whole docstring with an example) and then the docstring's
examples run on the completion in the sandbox. The same checker reads both versions'
``selected.jsonl``. Generation minutes = the seconds of the sampling stages (problems,
rated, skeletons, tests, candidates) from each round's ``timings.json`` (wall time, so a
busy machine adds noise; the script also prints the ratio per CPU minute of the whole
round, from the children's ``getrusage``, which load disturbs much less).

The ratio is pooled: (clean pairs / generation minutes) today over the same for the old
commit, all seeds together. Its interval is a paired percentile bootstrap over seeds,
computed here (``ucoder.evaluation.metrics.bootstrap_ci`` bootstraps a mean, and this
statistic is a ratio of sums). With 3 seeds the interval is coarse.

``--report-seed`` adds one round of today's code in ``rating_mode: report`` and prints
how the problems the rating would drop fared against those it keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GENERATION_STAGES = ("problems", "rated", "skeletons", "tests", "candidates")

SETTINGS = ["--problems", "12", "--samples", "8", "--tests", "8", "--threads", "1",
            "--no-progress"]


def commit_hash(ref: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], check=True,
                          capture_output=True, text=True).stdout.strip()


def unpack(commit: str, where: Path) -> Path:
    """The tree of ``commit`` in ``where`` (via ``git archive``; .git is not touched)."""
    if (where / "ucoder").is_dir():
        return where
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(where, filter="data")
    return where


def _env(tree: Path) -> dict:
    return os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}


def check_import(tree: Path) -> None:
    got = subprocess.run([sys.executable, "-c", "import ucoder; print(ucoder.__file__)"],
                         cwd=tree, env=_env(tree), capture_output=True, text=True,
                         check=True).stdout.strip()
    if not got.startswith(str(tree)):
        raise SystemExit(f"{tree}: imported ucoder from {got}, not from the tree")


def run_round(tree: Path, out: Path, seed: int, check_pairs,
              config: Path | None = None) -> dict:
    """One round from ``tree``; its clean pairs, generation seconds and wall time."""
    cmd = [sys.executable, "-m", "ucoder", "round", "--out", str(out), "--seed", str(seed)]
    cmd += SETTINGS + (["--config", str(config)] if config else [])
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"round failed in {tree}:\n{done.stderr[-3000:]}")
    timings = json.loads((out / "timings.json").read_text())
    pairs = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines() if x]
    reasons = check_pairs(pairs) if pairs else []
    return {"seed": seed, "selected": len(pairs), "clean": sum(r is None for r in reasons),
            "unclean_reasons": [r for r in reasons if r],
            "generation_s": sum(timings.get(s) or 0 for s in GENERATION_STAGES),
            "wall_s": round(time.perf_counter() - start, 1),
            "cpu_s": round(_children_cpu() - cpu, 1),
            "selection": json.loads((out / "round.json").read_text())["config"]["selection"]}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pooled_ratio(new: list[dict], old: list[dict], index, key: str = "generation_s") -> float:
    rate = [sum(r["clean"] for r in (rows[i] for i in index))
            / sum(r[key] for r in (rows[i] for i in index)) for rows in (new, old)]
    return rate[0] / rate[1] if rate[1] else float("inf")


def bootstrap(new: list[dict], old: list[dict], n_boot: int = 10000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    draws = [pooled_ratio(new, old, rng.integers(0, len(new), len(new)))
             for _ in range(n_boot)]
    # inverted_cdf picks drawn values (no interpolation), so a resample in which the old
    # commit made no clean pair gives an interval end of inf rather than nan.
    low, high = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def same_selection(a: dict, b: dict) -> None:
    shared = set(a) & set(b)
    if any(a[k] != b[k] for k in shared):
        raise SystemExit(f"the two versions select differently: {a} vs {b}")


def report_round(tree: Path, out: Path, seed: int, check_pairs) -> None:
    config = out.parent / "report.yaml"
    config.write_text("rating_mode: report\n")
    run_round(tree, out, seed, check_pairs, config)
    stats = json.loads((out / "stats.json").read_text())["rating"]
    print(f"report-only round (seed {seed}): {json.dumps(stats)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--old", default="de25d68")
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--out", type=Path, default=Path("/tmp/round_yield"))
    parser.add_argument("--report-seed", type=int, default=None)
    args = parser.parse_args()
    old, new = commit_hash(args.old), commit_hash(args.new)
    old_tree = unpack(old, args.out / f"tree_{old}")
    new_tree = unpack(new, args.out / f"tree_{new}")
    for tree in (old_tree, new_tree):
        check_import(tree)
    sys.path.insert(0, str(new_tree))
    from ucoder.ipc.pairs import check_pairs

    print(f"old {old} vs new {new}; clean pairs by {new}'s ucoder.ipc.pairs.check_pairs",
          flush=True)
    results: dict[str, list[dict]] = {"old": [], "new": []}
    for k, seed in enumerate(args.seeds):
        order = [("old", old_tree), ("new", new_tree)][:: 1 if k % 2 == 0 else -1]
        for name, tree in order:
            row = run_round(tree, args.out / f"{name}_seed{seed}", seed, check_pairs)
            results[name].append(row)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
            print(f"{name} seed {seed}: {row['clean']}/{row['selected']} clean pairs, "
                  f"{row['generation_s']:.0f} s generation, {row['wall_s']} s wall, "
                  f"unclean: {row['unclean_reasons']}", flush=True)
        same_selection(results["old"][-1]["selection"], results["new"][-1]["selection"])
    if args.report_seed is not None:
        report_round(new_tree, args.out / f"report_seed{args.report_seed}",
                     args.report_seed, check_pairs)
    everything = range(len(args.seeds))
    cpu_ratio = pooled_ratio(results["new"], results["old"], everything, "cpu_s")
    print(f"clean pairs per CPU minute of the whole round (model load, sandbox and all; "
          f"robust to the machine's load): new/old = {cpu_ratio:.2f}")
    ratio = pooled_ratio(results["new"], results["old"], everything)
    low, high = bootstrap(results["new"], results["old"])
    print(f"pairs_per_minute_vs_before={ratio:.2f} ci={low:.2f}-{high:.2f}")


if __name__ == "__main__":
    main()
