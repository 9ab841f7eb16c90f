"""``ucoder sandbox run JOBS.jsonl --output RESULTS.jsonl``: run untrusted jobs in bulk.

Input lines: ``{"id", "code", "tests", "timeout"?, "memory_mb"?}``. Output: exactly one
line per input line, in input order (see :class:`ucoder.sandbox.Result`). A malformed
line becomes an ``error`` result naming the line number and the field; every other job
still runs. Exit status 0 whenever every job got a result, whatever the verdicts.
"""

from __future__ import annotations

import argparse
import logging
import time

HELP = "run model-written code and tests in the sandbox (JSONL in, JSONL out)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run every job of a JSONL file", description=HELP)
    run.add_argument("jobs", metavar="JOBS.jsonl", help="one job per line")
    run.add_argument("--output", "-o", required=True, metavar="RESULTS.jsonl",
                     help="where to write one result per job (written atomically)")
    run.add_argument("--workers", type=int, default=None,
                     help="warm workers (default: one per usable CPU core)")
    run.add_argument("--timeout", type=float, default=5.0,
                     help="default wall-clock seconds per job, all its tests together")
    run.add_argument("--memory-mb", type=int, default=512,
                     help="default address-space limit per job in MiB")
    run.add_argument("--tier", choices=("auto", "bwrap", "rlimit"), default="auto",
                     help="isolation tier (auto: bubblewrap when it works here)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_jobs(path: str) -> list:
    """Every line of ``path`` as a Job, or as an error Result naming line and field."""
    from ucoder.jsonl import JsonlError, iter_jsonl
    from ucoder.sandbox.jobs import JobError, error_result, job_from_dict

    items = []
    for lineno, obj in iter_jsonl(path):
        if isinstance(obj, JsonlError):
            items.append(error_result(None, f"line {lineno}: {obj.reason}"))
            continue
        try:
            items.append(job_from_dict(obj, where=f"line {lineno}"))
        except JobError as err:
            items.append(error_result(obj.get("id"), str(err)))
    return items


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder sandbox run``."""
    from ucoder.jsonl import write_jsonl
    from ucoder.sandbox import Job, Sandbox

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        sb = Sandbox(workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
                     tier=args.tier)
    except RuntimeError as err:  # a tier that cannot run here: the option's fault
        raise ValueError(str(err)) from err
    with sb:
        sb.start()  # the workers boot while the jobs are read
        try:
            items = read_jobs(args.jobs)
        except OSError as err:
            raise ValueError(f"cannot read JOBS.jsonl {args.jobs!r}: {err}") from err
        jobs = [x for x in items if isinstance(x, Job)]
        done = iter(sb.run(jobs, progress=not args.no_progress))
        results = [next(done) if isinstance(x, Job) else x for x in items]
        for r in results:
            r.tier = r.tier or sb.tier
    write_jsonl(args.output, (r.to_dict() for r in results))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    logging.getLogger("ucoder.sandbox").info(
        "%d jobs in %.2f s (%s) -> %s", len(results), time.perf_counter() - start,
        summary or "none", args.output)
    return 0
