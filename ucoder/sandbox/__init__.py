"""Isolated, fast execution of model-written code — the only place untrusted code runs.

    from ucoder.sandbox import Sandbox, Job
    with Sandbox(workers=None, timeout=5.0, memory_mb=512) as sb:
        results = sb.run([Job(id="a", code="def f(x):\n    return x",
                              tests=["assert f(1) == 1", "f(2)"])])

How it runs: warm workers (one per core, each kept on its core) live inside the
isolation. Each is a server plus a spawner that holds the pre-imported modules and the
warmed-up harness and clones one process per job (``server.py``); the job process enters
its limits, runs the code, then every test in the same namespace, and records each
verdict in shared memory (``harness.py``). The
job's ``timeout`` is wall-clock time for the *whole job* (code and all tests, not per
test): when it runs out the job is killed, tests already recorded keep their results,
the running one is ``timeout`` and the rest ``skipped``. A job is ``passed`` only if the
harness's final record arrives after every test passed.

What the isolation covers, in both tiers:
  * a wall-clock kill of the job's whole process tree (a pid namespace under bwrap,
    the process group plus a sweep otherwise); CPU-time, address-space
    (``memory_mb``), file-size (16 MiB), open-file (256) and process-count rlimits;
  * a scrubbed environment: the caller's variables (tokens, keys) never reach a job;
  * a private scratch directory per job as working dir, HOME and TMPDIR, removed after;
  * stdout/stderr go to a pipe, the first 4 KiB kept (``Result.stdout``) and never
    parsed; verdicts are records with a per-job nonce in memory the server mapped for
    the job, so printing, ``sys.exit``/``os._exit``, signals or junk written to
    inherited descriptors never yield ``passed``;
  * as root, jobs run as an unprivileged uid (65534 under bwrap, one uid per worker in
    tier 2): they cannot signal the runner, its workers, or read root-only files;
  * a worker that dies or stops answering is killed with its process group and
    replaced; its current job gets ``crashed``/``timeout``, the others are re-queued;
  * equality hacks: a test passes only on genuine values (:mod:`genuine`: builtin
    types checked through containers, or other C-implemented non-container types). An
    expression test's value must be genuine, and every ``assert`` in a test, at any
    depth (HumanEval's ``check``), checks the values its outcome rests on first: its
    own value, the operands of ``and``/``or``/``not`` and of every comparison but
    ``is``. An object whose ``__eq__``, ``__hash__``, ``__bool__`` or ``__repr__``
    says what the test wants (a subclass of a builtin too) fails, in the ``pass`` and
    ``output`` signatures and in benchmark scoring alike. ``1 == 1.0`` and
    ``True == 1`` still hold, as in plain Python; a ``Counter`` counts as its dict.
Tier 1, ``bwrap`` (bubblewrap; chosen automatically when it works here, probed once):
  * no network (own net namespace, loopback down), own ipc/uts/pid namespaces;
  * a read-only view of the host file system; /root and /home hidden behind a tmpfs
    (the interpreter's own directories bound back read-only); a private /tmp;
  * as root a pid namespace per job: daemons and fork bombs die with the job (a job is
    pid 1 there, so SIGKILL/SIGSTOP it sends *to itself* are ignored by the kernel);
  * the worker ends with the process that started it (its job pipe hangs up; not
    bwrap's ``--die-with-parent``, which is tied to the starting *thread*).
Tier 2, ``rlimit`` (no bubblewrap): own session/process group, the rlimits above, a
scratch dir on tmpfs, as root a uid per worker whose processes are killed with one
``kill(-1)`` at the end of every job. A warning at start names what is missing: network
isolation, a read-only file system (world-writable dirs such as /tmp stay writable), a
private pid namespace, hidden home directories; without root also a separate user (your
files, processes and their /proc entries are then reachable); and, where the stdlib is
not readable by the job uid (Python under /root), imports beyond the preloaded modules.

What it does not cover:
  * a candidate that deliberately attacks the harness inside its own process (finds the
    nonce and the shared memory, patches the harness, the genuine-value check or the
    builtins a test calls) can fake *its own* verdict; it cannot change other jobs'
    verdicts, the runner or the host;
  * truth tests and comparisons made by code a test calls (``all(f(x) for ...)``,
    ``math.isclose``, a test's helper function) or outside an ``assert`` see the
    candidate's values unchecked;
  * kernel exploits and side channels; CPU, memory-bandwidth and disk-cache contention;
  * memory is limited per process (RLIMIT_AS), not per job tree (no cgroups);
  * reads of world-readable host files outside the hidden home directories.
"""

from ucoder.sandbox.jobs import Job, JobError, Result, TestResult, job_from_dict
from ucoder.sandbox.pool import Sandbox, sandbox_or_new
from ucoder.sandbox.tiers import choose_tier, probe_bwrap

__all__ = ["Job", "JobError", "Result", "Sandbox", "TestResult", "choose_tier",
           "job_from_dict", "probe_bwrap", "sandbox_or_new"]
