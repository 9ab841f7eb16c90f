"""The warm worker pool: one worker per core, jobs streamed to them, results back.

Each worker gets up to ``PIPELINE`` jobs ahead so it never waits for this process.
The worker's server enforces each job's wall clock itself; this side is the backstop: a
worker that owes a result for longer than the job's timeout + ``GRACE_S`` (stopped,
killed from inside, wedged) is killed with its whole process group and replaced, and
the job it was running gets a ``timeout``/``crashed`` result. Other jobs go back in line.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable

from ucoder.sandbox.client import START_TIMEOUT_S, Worker
from ucoder.sandbox.jobs import (
    MIN_MEMORY_MB,
    Job,
    JobError,
    Result,
    TestResult,
    error_result,
    job_from_dict,
)
from ucoder.sandbox.tiers import choose_tier, missing_protections

log = logging.getLogger("ucoder.sandbox")

PIPELINE = 2
WORKERS_PER_CORE = 1
GRACE_S = 3.0
# Below glibc's mmap threshold: a 1 MiB read buffer costs an mmap, mremap and munmap
# on every read (benchmarks/sandbox_results.md). Longer lines take several reads.
READ_BYTES = 1 << 16


class Sandbox:
    """Run untrusted Python jobs in isolated, warm workers.

    Args:
        workers: number of workers (``None``: one per usable CPU core, each kept on its
            core; more per core only pays off for jobs that sleep or wait).
        timeout: default wall-clock seconds per job (its code and all its tests).
        memory_mb: default address-space limit per job in MiB.
        tier: ``auto`` (bubblewrap when it works here, else rlimits), ``bwrap`` or
            ``rlimit``.

    Use as a context manager, or call :meth:`close` (also registered with atexit).
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0,
                 memory_mb: int = 512, tier: str = "auto"):
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r} is not allowed; use a positive integer "
                             "or None for one per usable CPU core")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} is not allowed; use seconds > 0")
        if not (isinstance(memory_mb, int) and memory_mb >= MIN_MEMORY_MB):
            raise ValueError(f"memory_mb={memory_mb!r} is not allowed; use an integer "
                             f">= {MIN_MEMORY_MB}")
        # A worker hands each job from server to spawner to child and back; kept on one
        # core those hand-offs are plain context switches that leave the core no time
        # to idle, so one worker per core keeps it busy (measured on 2 cores: one per
        # core 1.13x the CLI's jobs/s of two per core, which also boot twice the
        # interpreters; benchmarks/sandbox_results.md). The cores this process may
        # use (a container's cpuset).
        self._cpus = sorted(os.sched_getaffinity(0))
        self.n_workers = workers or WORKERS_PER_CORE * len(self._cpus)
        self.timeout, self.memory_mb = float(timeout), memory_mb
        self.tier = choose_tier(tier)
        self._workers: list[Worker] = []
        self._starting: list[Worker] = []  # launched by start(), not yet said hello
        self._start_deadline = 0.0
        self._scratch: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sandbox:
        """Start the workers now; they boot in the background and :meth:`run` waits for
        them (by default they start at the first run). Lets a caller read its jobs while
        the workers come up."""
        if self._closed:
            raise RuntimeError("this Sandbox is closed; create a new one")
        if self._workers or self._starting:
            return self
        missing = missing_protections(self.tier)
        if missing:
            log.warning("sandbox tier %s: missing protections: %s", self.tier,
                        "; ".join(missing))
        else:
            log.info("sandbox tier %s: no network, read-only file system, private /tmp, "
                     "pid namespace per job, uid 65534", self.tier)
        if self.tier == "rlimit":
            # tmpfs when there is one: a job's mkdir/rmdir on a disk file system costs
            # more than running the job.
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
            self._scratch = tempfile.mkdtemp(prefix="ucoder-sandbox-", dir=shm)
            os.chmod(self._scratch, 0o711)  # job uids reach their own subdir, list nothing
        self._start_deadline = time.monotonic() + START_TIMEOUT_S
        try:
            for i in range(self.n_workers):
                self._starting.append(self._new_worker(i))
        except BaseException:
            self._kill_all()
            raise
        return self

    def _ready(self, every: bool = True) -> None:
        """Start the workers if needed and wait until every one has said hello (or,
        with ``every=False``, the first one: :meth:`_loop` takes the others in as they
        come up, so jobs run while the rest still boot)."""
        self.start()
        try:
            if every:
                while self._starting:
                    self._workers.append(self._starting.pop(0).wait_ready(self._start_left()))
            while not self._workers and not self._take_in_started():
                # whichever worker is up first (at the deadline every one is taken in,
                # and one that has not said hello fails with the usual error)
                select.select([w.out_fd for w in self._starting], [], [], self._start_left())
        except BaseException:
            self._kill_all()
            raise

    def _take_in_started(self) -> bool:
        """Move workers whose hello has arrived from starting to running."""
        if not self._starting:
            return False
        fds = [w.out_fd for w in self._starting]
        ready = set(select.select(fds, [], [], 0)[0])
        late = self._start_left() == 0  # wait_ready then fails with the usual error
        joined = [w for w in self._starting if w.out_fd in ready or late]
        try:
            for w in joined:
                self._starting.remove(w)
                self._workers.append(w.wait_ready(self._start_left()))
        except BaseException:
            self._kill_all()
            raise
        return bool(joined)

    def _start_left(self) -> float:
        return max(self._start_deadline - time.monotonic(), 0.0)

    def _kill_all(self) -> None:
        for w in self._starting + self._workers:
            w.kill()
        self._starting, self._workers = [], []

    def _new_worker(self, index: int) -> Worker:
        return Worker(self.tier, index, self._scratch or "/tmp", self._cpu_for(index))

    def _cpu_for(self, index: int) -> int | None:
        """Pin worker ``index`` to one CPU when the pool covers every CPU this process
        may use equally often (the default, one per core); otherwise leave placement to
        the scheduler (several small pools would pile onto the same CPUs)."""
        cpus = self._cpus
        return cpus[index % len(cpus)] if self.n_workers % len(cpus) == 0 else None

    def _spawn(self, index: int) -> Worker:
        return self._new_worker(index).wait_ready()

    def close(self) -> None:
        """Stop the workers (each sweeps its leftovers) and remove scratch space."""
        if self._closed:
            return
        self._closed = True
        for worker in self._starting:  # never used: nothing to wind down
            worker.kill()
        self._starting = []
        for worker in self._workers:
            worker.close_input()  # all at once: they wind down in parallel
        for worker in self._workers:
            worker.close()
        self._workers = []
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def job_uids(self) -> list[int]:
        """The uids jobs run as (empty when not root: jobs keep the caller's uid)."""
        self._ready(every=True)
        return sorted({w.uid for w in self._workers if w.uid is not None})

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the running worker processes (bwrap or python), for inspection."""
        if self._starting:
            self._ready(every=True)
        return [w.proc.pid for w in self._workers]

    # ------------------------------------------------------------------ running
    def run(self, jobs: Iterable[Job | dict], progress: bool = False) -> list[Result]:
        """Run every job; one :class:`Result` per job, in input order.

        Dicts use the JSONL input shape; a malformed one becomes an ``error`` result
        naming its position and field, and the other jobs still run.
        """
        items = list(jobs)
        results: list[Result | None] = [None] * len(items)
        todo: deque[tuple[int, Job]] = deque()
        for k, item in enumerate(items):
            try:
                todo.append((k, item if isinstance(item, Job) else
                             job_from_dict(item, where=f"job {k}")))
            except JobError as err:
                job_id = item.get("id") if isinstance(item, dict) else None
                results[k] = error_result(job_id, str(err), self.tier)
        with self._lock:
            self._ready(every=False)
            bar = _progress(len(items), progress)
            bar.update(len(items) - len(todo))
            try:
                self._loop(todo, results, bar)
            finally:
                bar.close()
        return results  # type: ignore[return-value]

    def _limits(self, job: Job) -> tuple[float, int]:
        return (job.timeout or self.timeout, job.memory_mb or self.memory_mb)

    def _loop(self, todo: deque, results: list, bar) -> None:
        by_fd = {w.out_fd: w for w in self._workers}
        while todo or any(w.inflight for w in self._workers):
            if todo and self._take_in_started():
                by_fd = {w.out_fd: w for w in self._workers}
            for w in self._workers:
                while todo and len(w.inflight) < PIPELINE:
                    k, job = todo.popleft()
                    w.send(k, job, *self._limits(job))
            now = time.monotonic()
            busy = [w for w in self._workers if w.inflight]
            wait = min(w.head_since + self._limits(w.inflight[0][1])[0] + GRACE_S - now
                       for w in busy)
            fds = [w.out_fd for w in busy]
            if todo and self._starting:  # wake up when a booting worker says hello
                fds += [w.out_fd for w in self._starting]
                wait = min(wait, self._start_deadline - now)
            ready, _, _ = select.select(fds, [], [], max(wait, 0))
            for fd in ready:
                w = by_fd.get(fd)
                if w is None:
                    continue  # a hello: taken in at the top of the loop
                data = os.read(fd, READ_BYTES)
                if not data:
                    self._replace(w, "crashed", "the sandbox worker died", todo, results, bar)
                    by_fd = {x.out_fd: x for x in self._workers}
                    continue
                for msg in w.take_lines(data):
                    k, job = w.inflight.popleft()
                    w.head_since = time.monotonic()
                    results[k] = self._result(job, msg)
                    bar.update(1)
            now = time.monotonic()
            for w in list(self._workers):
                if w.inflight and now > (w.head_since + self._limits(w.inflight[0][1])[0]
                                         + GRACE_S):
                    self._replace(w, "timeout", "the sandbox worker did not answer in time "
                                  "and was killed", todo, results, bar)
                    by_fd = {x.out_fd: x for x in self._workers}

    def _replace(self, w: Worker, status: str, why: str, todo: deque, results: list,
                 bar) -> None:
        """Kill a broken worker, fail the job it was running, requeue the rest."""
        k, job = w.inflight.popleft()
        results[k] = Result(id=job.id, status=status, tests=[
            TestResult(False, "skipped") for _ in job.tests], duration_s=0.0,
            tier=self.tier, error=why)
        bar.update(1)
        todo.extendleft(reversed(w.inflight))
        w.kill()
        self._workers[self._workers.index(w)] = self._spawn(w.index)

    def _result(self, job: Job, msg: dict) -> Result:
        return Result(
            id=job.id, status=msg["status"],
            tests=[TestResult(*t) for t in msg.get("tests", [])],
            duration_s=round(msg.get("duration_s", 0.0), 6), tier=self.tier,
            error=msg.get("error"), stdout=msg.get("stdout"))


def sandbox_or_new(sandbox: Sandbox | None, timeout: float):
    """A context giving ``sandbox`` (left open: its owner closes it) or, when it is None,
    a new :class:`Sandbox` with this default timeout, closed on exit."""
    return contextlib.nullcontext(sandbox) if sandbox is not None else Sandbox(timeout=timeout)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr; tqdm is imported only when shown (it costs ~50 ms)."""
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="job", desc="sandbox", dynamic_ncols=True)
