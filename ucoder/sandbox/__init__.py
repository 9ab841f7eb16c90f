"""Isolated, fast execution of model-written code — the only place untrusted code runs.

    from ucoder.sandbox import Sandbox, Job
    with Sandbox(workers=None, timeout=5.0, memory_mb=512) as sb:
        results = sb.run([Job(id="a", code="def f(x):\\n    return x",
                              tests=["assert f(1) == 1", "f(2)"])])

How it runs: one warm *fork server* per core (``worker.py``) lives inside the
isolation, pre-imports common stdlib modules, and forks one child per job; the child
enters the job's limits, runs the code and then every test in the same namespace, and
reports each verdict on a private pipe. The job's ``timeout`` is wall-clock time for the
whole job (code and all tests together, not per test); when it runs out the job is
killed, tests already reported keep their results, the running one is ``timeout`` and
the rest ``skipped``. A job is ``passed`` only if the harness's final record arrives.

What the isolation covers, in both tiers:
  * wall-clock kill of the job's whole process tree; CPU-time, address-space
    (``memory_mb``), file-size (16 MiB), open-file and process-count rlimits;
  * a scrubbed environment (the caller's tokens and keys are not passed on);
  * a private scratch directory per job as working dir, HOME and TMPDIR;
  * stdout/stderr captured into a pipe, the first 4 KiB kept (``Result.stdout``), never
    parsed; verdicts travel on a separate pipe with a per-job nonce, so printing,
    ``sys.exit``/``os._exit`` or writing junk to inherited fds never yields ``passed``;
  * as root: each job runs as an unprivileged uid that cannot signal the runner.
Tier 1, ``bwrap`` (bubblewrap, chosen automatically when it works; probed once):
  * no network (own net namespace with only a down loopback), own ipc/uts namespaces;
  * a read-only view of the host file system; /root and /home hidden (tmpfs; only
    the interpreter's own directories are bound back read-only); /tmp private;
  * a pid namespace per worker and, as root, per job: a detached daemon or fork bomb
    dies with the job; the worker dies with its parent (``--die-with-parent``).
Tier 2, ``rlimit`` (no bubblewrap): own session/process group, the rlimits above, temp
working dir, as root a uid per worker (leftover processes are swept with ``kill(-1)``
as that uid). A warning names what is missing: network isolation, a read-only file
system (world-writable dirs such as /tmp stay writable), a private pid namespace and,
when not root, a separate user (then your own files and processes are reachable).

What it does not cover:
  * a candidate that deliberately attacks the harness in its own process (reads the
    nonce from memory, patches the harness, returns objects whose ``__eq__`` is always
    true) can fake *its own* verdict; it cannot change other jobs' verdicts or the host;
  * kernel exploits, side channels, CPU/memory-bandwidth contention between jobs;
  * memory is limited per process (RLIMIT_AS), not per job tree (no cgroups);
  * reads of world-readable host files outside the hidden home directories.
"""

from ucoder.sandbox.jobs import Job, JobError, Result, TestResult, job_from_dict
from ucoder.sandbox.pool import Sandbox
from ucoder.sandbox.tiers import choose_tier, probe_bwrap

__all__ = ["Job", "JobError", "Result", "Sandbox", "TestResult", "choose_tier",
           "job_from_dict", "probe_bwrap"]
