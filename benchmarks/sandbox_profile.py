"""Where a sandbox job's CPU time goes: caller, worker servers, spawners, job processes.

Runs the benchmark's jobs (``benchmarks/sandbox.py``) through a warm in-process
:class:`~ucoder.sandbox.Sandbox` and reads the CPU time of every role from ``/proc``
(servers and spawners by pid; job processes through their parent, the server, which
reaps them). Linux only. Read spawners and job processes together: after a clone,
whichever of the two first writes a shared page pays for its copy, so their split moves
from run to run while their sum does not.

    python benchmarks/sandbox_profile.py [--jobs 3000] [--workers N] [--tier auto]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from sandbox import make_jobs  # noqa: E402

from ucoder.sandbox import Sandbox  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own CPU, CPU of reaped children) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def worker_processes() -> tuple[list[int], list[int]]:
    """Host pids of the worker servers and of their spawners (children of a server)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if b"server.py" in cmd and not cmd.startswith(b"bwrap") and b"/bwrap" not in cmd:
            parents[int(name)] = ppid
    servers = [p for p, pp in parents.items() if pp not in parents]
    return servers, [p for p, pp in parents.items() if pp in parents]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tier", default="auto", choices=("auto", "bwrap", "rlimit"))
    args = parser.parse_args()
    jobs = [{k: j[k] for k in ("id", "code", "tests")} for j in make_jobs(args.jobs)]
    with Sandbox(workers=args.workers, tier=args.tier) as sb:
        sb.run(jobs[: 2 * sb.n_workers])  # every worker up and warm
        servers, spawners = worker_processes()

        def snapshot() -> list[float]:
            server = [cpu_seconds(p) for p in servers]
            return [sum(own for own, _ in server), sum(kids for _, kids in server),
                    sum(cpu_seconds(p)[0] for p in spawners), sum(os.times()[:2])]

        before, start = snapshot(), time.perf_counter()
        results = sb.run(jobs)
        seconds, after = time.perf_counter() - start, snapshot()
    roles = ("servers", "job processes", "spawners (clone)", "caller")
    per_job = [(b - a) / args.jobs * 1e3 for a, b in zip(before, after)]
    print(f"{args.jobs} jobs, {sb.n_workers} workers ({sb.tier}): {args.jobs / seconds:.0f} "
          f"jobs/s, {sum(r.status == 'passed' for r in results)} passed")
    for role, ms in zip(roles, per_job):
        print(f"  {role:18s} {ms:.3f} ms CPU per job ({ms / sum(per_job):.0%})")
    print(f"cpu_ms_per_job={sum(per_job):.3f}")


if __name__ == "__main__":
    main()
