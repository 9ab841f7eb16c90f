"""A worker's server, inside the isolation (stdlib only; started as a script).

Two processes per worker. The *server* reads jobs, keeps the clock, cleans up and
writes one JSON result line per job. At start it forks the *spawner* (:mod:`spawning`),
whose only loop is "wait for a byte, clone a child": the spawner holds the pre-imported
modules every job starts from and touches almost no memory itself, so a job costs one
cheap fork and the server's bookkeeping never pays copy-on-write faults. Children are created with
``clone(CLONE_PARENT)`` (plus ``CLONE_NEWPID`` where allowed), so they are the server's
children: it waits for them, reads their exit status and kills them.

Job in, verdicts out, through one shared-memory area (:mod:`harness` has the layout).
A job counts as passed only if the harness's final record arrives; every record carries
a per-job random nonce; the candidate's stdout/stderr go to a capped capture pipe and are
never parsed. See :mod:`ucoder.sandbox` for what this protects against and what not.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import select
import signal
import sys
import time

if __name__ == "__main__":  # started as a script: import our siblings, then forget the dir
    import canon  # noqa: F401 (imported first so that harness and verdicts find it)
    import cleanup
    import harness
    import spawning
    import verdicts

    del sys.path[0]  # candidates must not import the sandbox's modules by accident
else:
    from ucoder.sandbox import cleanup, harness, spawning, verdicts

PR_SET_CHILD_SUBREAPER = 36
STDOUT_CAP = 4096  # bytes of candidate stdout/stderr kept per job; the rest is drained
READ_BYTES = 1 << 16  # below malloc's mmap threshold: no mmap/munmap per read

_libc = ctypes.CDLL(None, use_errno=True)


class Server:
    """One worker's server; ``serve()`` loops until the job pipe closes."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        cfg["scratch"] = os.path.join(cfg["scratch_root"], "job")  # one job at a time
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of jobs come back here
        # Job and result pipes move off fds 0/1, which become /dev/null: a child then
        # only points 1 and 2 at the capture pipe.
        self.jobs = os.dup(0)
        self.results = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        for stream in (sys.stdout, sys.stderr):  # keep what a job prints before os._exit
            stream.reconfigure(line_buffering=True)
        os.environ.update(HOME=cfg["scratch"], TMPDIR=cfg["scratch"])
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = cfg["scratch"]
        self.area = mmap.mmap(-1, harness.AREA_SIZE)  # shared with spawner and children
        self.out_r, out_w = os.pipe()
        os.set_blocking(self.out_r, False)
        self.vm_mb = int(open("/proc/self/statm").read().split()[0]) * os.sysconf(
            "SC_PAGE_SIZE") >> 20
        self.spawner_pid, self.cmd_w, self.reply_r = self._start_spawner(out_w)
        os.close(out_w)

    def _start_spawner(self, out_w: int) -> tuple[int, int, int]:
        flags = spawning.CLONE_PARENT | signal.SIGCHLD
        if self.cfg["sweep"] == "pidns":
            flags |= spawning.CLONE_NEWPID  # needs CAP_SYS_ADMIN: bwrap as root keeps it for us
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(cmd_w)
                os.close(reply_r)
                os.close(self.results)
                os.close(self.out_r)
                os.close(self.jobs)
                area, cfg = self.area, self.cfg
                harness.prepare_spawner(cfg)
                spawning.spawner(cmd_r, reply_w, flags,
                        lambda: harness.child_main(area, out_w, cfg))
            finally:
                os._exit(0)
        os.close(cmd_r)
        os.close(reply_w)
        return pid, cmd_w, reply_r

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.results, data):]

    def serve(self) -> None:
        self.send({"hello": True, "pid": os.getpid(), "vm_mb": self.vm_mb,
                   "sweep": self.cfg["sweep"], "uid": self.cfg["uid"]})
        for line in self.lines():
            job = json.loads(line)
            try:
                result = self.run_job(job, line)
            except CallerGone:
                break
            except SpawnerGone:
                raise
            except Exception as exc:  # a sandbox fault must cost one job, not the worker
                result = {"status": "error", "tests": [],
                          "error": f"sandbox: {type(exc).__name__}: {exc}"}
            result["i"] = job["i"]
            self.send(result)
        os.close(self.cmd_w)
        self.sweep()
        if self.cfg["own_scratch_root"]:  # tier 2: the caller may be gone (killed)
            cleanup.remove(self.cfg["scratch_root"])
            try:
                os.rmdir(os.path.dirname(self.cfg["scratch_root"]))  # the last one out
            except OSError:
                pass

    def lines(self):
        """Job lines from the job pipe; while idle, reap what finished jobs left."""
        poll = select.poll()
        poll.register(self.jobs, select.POLLIN)
        buf = bytearray()
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[:end + 1]
                yield line
                continue
            if not poll.poll(100):
                self.reap_orphans()
                continue
            data = os.read(self.jobs, READ_BYTES)
            if not data:
                return
            buf += data

    def run_job(self, job: dict, line: bytes) -> dict:
        need = self.vm_mb + 16
        if job["memory_mb"] < need:
            return {"status": "error", "tests": [], "error":
                    f"memory_mb={job['memory_mb']} is below the interpreter's own address "
                    f"space; use at least {need}"}
        scratch, uid = self.cfg["scratch"], self.cfg["uid"]
        try:
            os.mkdir(scratch, 0o700)
        except FileExistsError:  # left by a worker killed before it could clean up
            cleanup.remove(scratch)
            os.mkdir(scratch, 0o700)
        if uid is not None:
            os.chown(scratch, uid, uid)
        nonce = os.urandom(8).hex().encode()
        harness.put_job(self.area, nonce, job, harness.compile_job(job["code"], job["tests"]))
        start = time.perf_counter()
        os.write(self.cmd_w, b"j")
        reply = os.read(self.reply_r, 8)
        if len(reply) != 8:
            raise SpawnerGone("the spawner died (killed from inside a job?)")
        pid = int.from_bytes(reply, "little", signed=True)
        if pid < 0:
            raise OSError(-pid, f"cannot start the job process: {os.strerror(-pid)}")
        watch = self.watch(pid, start + job["timeout"])
        watch["duration_s"] = time.perf_counter() - start
        watch["records"], watch["forged"] = verdicts.parse_records(
            harness.read_records(self.area), nonce)
        ended = any(rec.get("k") == "e" for rec in watch["records"])
        # "uid": a harness that finished has already killed every process of the job's
        # uid at once (kill(-1)); what it killed is reaped here or while idle.
        if self.cfg["sweep"] in ("kill_all", "children") or not ended:
            self.sweep()
        self.reap_orphans()
        cleanup.remove(scratch)
        return verdicts.verdict(job, watch)

    def watch(self, pid: int, deadline: float) -> dict:
        """Drain the capture pipe until the child exits or its time runs out."""
        pidfd = os.pidfd_open(pid)
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        poll.register(self.out_r, select.POLLIN)
        # Events 0: only a hang-up is reported, i.e. the caller is gone (see CallerGone).
        poll.register(self.jobs, 0)
        out = bytearray()
        timed_out = exited = False
        try:
            while not exited:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    timed_out = True
                    break
                for fd, _ in poll.poll(remaining * 1000 + 1):
                    if fd == pidfd:
                        exited = True
                    elif fd == self.jobs:
                        self.kill(pid)
                        os.waitpid(pid, 0)
                        raise CallerGone
                    else:
                        self._drain(out)
            self.kill(pid)
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(pidfd)
        self._drain(out)  # what the child printed just before it exited
        return {"timed_out": timed_out, "status": status,
                "stdout": out.decode("utf-8", "replace")}

    def _drain(self, out: bytearray) -> None:
        while True:
            try:
                data = os.read(self.out_r, 65536)
            except BlockingIOError:
                return
            if len(out) < STDOUT_CAP:
                out += data[: STDOUT_CAP - len(out)]

    def kill(self, pid: int) -> None:
        # pgid == pid once the child called setsid; before that killpg finds nothing.
        for fn in (os.killpg, os.kill):
            try:
                fn(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def sweep(self) -> None:
        """Kill whatever the job left behind (daemons, fork bombs)."""
        mode = self.cfg["sweep"]
        if mode == "pidns":
            return  # the job's pid namespace died with its init (the job child)
        keep = {1, os.getpid(), self.spawner_pid}
        if mode == "uid":
            pid = os.fork()
            if pid == 0:  # as the job's uid, kill(-1) reaches exactly the job's processes,
                try:      # all at once (a fork bomb cannot outrun it)
                    os.setuid(self.cfg["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        for _ in range(200):
            # kill_all: our pid namespace holds only us and the job's processes;
            # otherwise what the job left was re-parented to us (we are a subreaper).
            pids = cleanup.pids(None if mode == "kill_all" else os.getpid())
            pids = [p for p in pids if p not in keep]
            if not pids:
                return
            for p in pids:
                self.kill(p)
            self.reap_orphans(block_for=0.01)

    def reap_orphans(self, block_for: float = 0.0) -> None:
        end = time.perf_counter() + block_for
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == self.spawner_pid:
                raise SpawnerGone("the spawner died (killed from inside a job?)")
            if pid == 0:
                if time.perf_counter() >= end:
                    return
                time.sleep(0.001)


class CallerGone(Exception):
    """The job pipe hung up: whoever started this worker is gone, so the worker ends.

    This replaces bwrap's ``--die-with-parent`` and ``PR_SET_PDEATHSIG``, which fire
    when the *thread* that started the worker ends, not the process.
    """


class SpawnerGone(RuntimeError):
    """The spawner process is gone; the worker exits and the pool replaces it."""


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sys.path.extend(d for d in cfg["site_dirs"] if d not in sys.path)  # started with -S
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if cfg["cpu"] is not None:
        # Server, spawner and job hand off to each other several times per job; on one
        # CPU each hand-off is a plain context switch instead of a cross-CPU wake-up
        # (an interrupt, costly in a VM). Measured on 2 cores: 1.12x the jobs/s, and
        # it is what lets one worker per core keep its core busy.
        try:
            os.sched_setaffinity(0, {cfg["cpu"]})
        except OSError:
            pass  # not allowed here: the scheduler places us
    spawning.preload(cfg["preload"])
    Server(cfg).serve()
    os._exit(0)  # every result went out with os.write; skip the interpreter's teardown


if __name__ == "__main__":
    main()
