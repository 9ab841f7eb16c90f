"""Server-side reading of a job's verdict records (stdlib only; runs in the worker).

The harness writes ``<nonce> <json>`` lines; :func:`parse_records` keeps the ones with
this job's nonce and flags anything else as forged, :func:`verdict` turns the records
and the exit status into the result fields. A job is ``passed`` only when the code
record, one record per test in order, and the final ``end`` record are all there.
"""

from __future__ import annotations

import json
import os
import signal

if __package__:
    from ucoder.sandbox.canon import behaviour_hash
else:  # imported by server.py started as a script inside the isolation
    from canon import behaviour_hash


def parse_records(data: bytes, nonce: bytes) -> tuple[list[dict], bool]:
    """Split verdict bytes into records; anything without the nonce marks a forgery."""
    bodies, forged = [], False
    for line in data.split(b"\n"):
        if not line:
            continue
        head, _, body = line.partition(b" ")
        if head != nonce:
            forged = True
            continue
        bodies.append(body)
    try:  # one parse for all: the usual case, every record whole
        records = json.loads(b"[" + b",".join(bodies) + b"]")
        if all(type(rec) is dict for rec in records) and len(records) == len(bodies):
            return records, forged
    except ValueError:
        pass
    records = []
    for body in bodies:
        try:
            rec = json.loads(body)
        except ValueError:
            rec = None
        if type(rec) is dict:
            records.append(rec)
        else:
            forged = True
    return records, forged


def verdict(job: dict, watch: dict) -> dict:
    """Turn the records and the exit status into the job's result fields."""
    n = len(job["tests"])
    code_rec, tests, ended, memory, forged = None, [], False, False, watch["forged"]
    for rec in watch["records"]:
        kind = rec.get("k")
        memory = memory or bool(rec.get("m")) or kind == "m"
        if kind == "c" and code_rec is None:
            code_rec = rec
        elif kind == "t" and code_rec is not None and rec.get("i") == len(tests) < n:
            tests.append([rec["s"] == "passed", rec["s"], rec.get("o"), rec.get("h"),
                          rec.get("e")])
        elif kind == "e" and code_rec is not None and not ended:
            ended = True
        elif kind != "m":
            forged = True  # out of order or repeated: not what the harness writes
    status = watch["status"]
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    timed_out = watch["timed_out"] or sig == signal.SIGXCPU
    if watch["timed_out"]:
        death = f"timed out after {job['timeout']:g} s (wall clock)"
    elif sig == signal.SIGXCPU:
        death = "CPU time limit exceeded"
    elif sig is not None:
        death = f"killed by {signal.Signals(sig).name}"
    else:
        death = f"exited with status {os.WEXITSTATUS(status)} before the harness finished"
    code_ok = code_rec is not None and bool(code_rec.get("ok"))
    if code_ok and not ended and len(tests) < n:  # the test that was running when it ended
        marker = "<timeout>" if timed_out else "<crash>"
        tests.append([False, "timeout" if timed_out else "error", None,
                      behaviour_hash(marker), death])
    tests += [[False, "skipped", None, None, None] for _ in range(n - len(tests))]
    error = None if code_rec is None or code_ok else f"the code raised {code_rec.get('e')}"
    if memory:
        job_status, error = "memory", error or "MemoryError under the address-space limit"
    elif timed_out:
        job_status, error = "timeout", death
    elif forged:
        job_status = "crashed"
        error = "the verdict channel carried records the harness did not write"
    elif not ended:
        job_status, error = "crashed", death
    elif code_ok and all(t[0] for t in tests):
        job_status = "passed"
    else:
        job_status = "failed"
    return {"status": job_status, "tests": tests, "error": error,
            "duration_s": watch["duration_s"], "stdout": watch["stdout"] or None}
