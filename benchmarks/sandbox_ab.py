"""One commit's `ucoder sandbox run` against another's (default: this checkout), taking turns.

Both run the same 1,000 jobs of ``benchmarks/sandbox.py`` through the real CLI, each from
its own tree (``python -m`` puts the working directory first on ``sys.path``, so the
older commit is extracted with ``git archive`` and run from there). The order flips every
round, so drift on a shared machine hits both alike.

    python benchmarks/sandbox_ab.py --old fccde06 [--new REV] [--rounds 10] [--jobs 1000]

The last line is ``new_vs_old=<ratio>``: the median over rounds of old seconds / new
seconds (> 1: the new one is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sandbox import make_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def extract(rev: str, into: Path) -> Path:
    """The ``ucoder`` package of ``rev``, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ucoder"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def cli_seconds(tree: Path, jobs: Path, out: Path, workers: int | None) -> float:
    cmd = [sys.executable, "-m", "ucoder", "sandbox", "run", str(jobs), "--output", str(out),
           "--no-progress"] + (["--workers", str(workers)] if workers else [])
    start = time.perf_counter()
    subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--new", default=None, help="a commit (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="passed to both CLIs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        trees = {}
        for name, rev in (("old", args.old), ("new", args.new)):
            (tmp_path / name).mkdir()
            trees[name] = extract(rev, tmp_path / name) if rev else ROOT
        jobs = tmp_path / "jobs.jsonl"
        jobs.write_text("".join(json.dumps({k: j[k] for k in ("id", "code", "tests")}) + "\n"
                                for j in make_jobs(args.jobs)))
        rows = []
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            seconds = {name: cli_seconds(trees[name], jobs, tmp_path / f"{name}.jsonl",
                                         args.workers) for name in order}
            rows.append((seconds["old"], seconds["new"]))
            print(f"round {r}: old {seconds['old']:.2f} s, new {seconds['new']:.2f} s")
    old, new = [r[0] for r in rows], [r[1] for r in rows]
    print(f"median: old ({args.old}) {statistics.median(old):.2f} s, new "
          f"({args.new or 'this checkout'}) {statistics.median(new):.2f} s for {args.jobs} jobs")
    print(f"new_vs_old={statistics.median(o / n for o, n in rows):.3f}")


if __name__ == "__main__":
    main()
