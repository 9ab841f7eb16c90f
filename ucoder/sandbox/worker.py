"""The fork server that runs inside the isolation (stdlib only; started as a script).

One server per worker: it pre-imports common modules once, then for every job read
from its job pipe forks a child that enters the job's limits and runs the candidate and
its tests (:mod:`harness`). The server never runs candidate code itself; it enforces the
wall clock, removes every process the job left, and writes one JSON result line.
See :mod:`ucoder.sandbox` for what this protects against and what not.

A job counts as passed only if the harness's final record arrives, every record carries
a per-job random nonce, and the records live in a shared-memory area mapped for that
job only — not on the candidate's stdout (fd 1/2 go to a capped capture pipe):
printing, exiting early or writing junk to inherited descriptors never yields passed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import select
import shutil
import signal
import sys
import time

if __name__ == "__main__":  # started as a script: import our siblings, then forget the dir
    import canon  # noqa: F401 (imported here so harness finds it before the path goes)
    import harness

    del sys.path[0]  # candidates must not import the sandbox's modules by accident
else:
    from ucoder.sandbox import harness

CLONE_NEWPID = 0x20000000
PR_SET_CHILD_SUBREAPER = 36
STDOUT_CAP = 4096  # bytes of candidate stdout/stderr kept per job; the rest is drained

_libc = ctypes.CDLL(None, use_errno=True)


class Server:
    """State of one fork server; ``serve()`` loops until the job pipe closes."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        cfg["scratch"] = os.path.join(cfg["scratch_root"], "job")  # one job at a time
        self.pidns_fd: int | None = None
        if cfg["sweep"] == "pidns":
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            if not self._new_pidns():
                cfg["sweep"] = "kill_all"
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of jobs come back here
        # Job and result pipes move off fds 0/1; those become /dev/null, so a child only
        # has to point 1 and 2 at its capture pipe.
        self.jobs = os.fdopen(os.dup(0), "rb")
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
        self.vm_mb = int(open("/proc/self/statm").read().split()[0]) * os.sysconf(
            "SC_PAGE_SIZE") >> 20

    def _new_pidns(self) -> bool:
        # unshare(CLONE_NEWPID) only affects later children, and may not be repeated
        # until pid_ns_for_children is reset to our own namespace with setns.
        return (_libc.setns(self.pidns_fd, CLONE_NEWPID) == 0
                and _libc.unshare(CLONE_NEWPID) == 0)

    def send(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.results, data):]

    def serve(self) -> None:
        self.send({"hello": True, "pid": os.getpid(), "vm_mb": self.vm_mb,
                   "sweep": self.cfg["sweep"], "uid": self.cfg["uid"]})
        for line in self.jobs:
            job = json.loads(line)
            try:
                result = self.run_job(job)
            except Exception as exc:  # a sandbox fault must cost one job, not the worker
                result = {"status": "error", "tests": [],
                          "error": f"sandbox: {type(exc).__name__}: {exc}"}
            result["i"] = job["i"]
            self.send(result)
        self.sweep()

    def run_job(self, job: dict) -> dict:
        need = self.vm_mb + 16
        if job["memory_mb"] < need:
            return {"status": "error", "tests": [], "error":
                    f"memory_mb={job['memory_mb']} is below the interpreter's own address "
                    f"space; use at least {need}"}
        scratch, uid = self.cfg["scratch"], self.cfg["uid"]
        os.mkdir(scratch, 0o700)
        if uid is not None:
            os.chown(scratch, uid, uid)
        out_r, out_w = os.pipe()
        area = mmap.mmap(-1, harness.area_size(len(job["tests"])))  # this job's alone
        nonce = os.urandom(8).hex().encode()
        if self.pidns_fd is not None and not self._new_pidns():
            raise OSError(ctypes.get_errno(), "cannot create a pid namespace for the job")
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the job child: nothing here may return into the server loop
            try:
                os.close(out_r)
                harness.enter(self.cfg, job, out_w, _libc)
                harness.run(job["code"], job["tests"], area, nonce, self.cfg["sweep"] == "uid")
            finally:
                os._exit(70)
        os.close(out_w)
        try:
            watch = self.watch(pid, out_r, start + job["timeout"])
        finally:
            os.close(out_r)
        watch["duration_s"] = time.perf_counter() - start
        end = min(harness.HEADER.unpack_from(area, 0)[0], len(area))
        watch["records"], watch["forged"] = parse_records(area[harness.HEADER.size:end], nonce)
        area.close()
        ended = any(rec.get("k") == "e" for rec in watch["records"])
        # Nobody holds the capture pipe and the harness finished: nothing is left over
        # (in "uid" mode the harness itself has just killed the job's uid).
        if self.cfg["sweep"] in ("kill_all", "children") or not (watch.pop("eof") and ended):
            self.sweep()
        self.reap_orphans()
        _remove(scratch)
        return verdict(job, watch)

    def watch(self, pid: int, out_r: int, deadline: float) -> dict:
        """Drain the capture pipe until the child exits or its time runs out."""
        pidfd = os.pidfd_open(pid)
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        poll.register(out_r, select.POLLIN)
        out_buf, out_open, timed_out, exited = bytearray(), True, False, False
        try:
            while not exited:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    timed_out = True
                    break
                for fd, _ in poll.poll(remaining * 1000 + 1):
                    if fd == pidfd:
                        exited = True
                        continue
                    data = os.read(fd, 65536)
                    if not data:
                        poll.unregister(fd)
                        out_open = False
                    elif len(out_buf) < STDOUT_CAP:
                        out_buf += data[: STDOUT_CAP - len(out_buf)]
            self.kill(pid)
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(pidfd)
        if out_open:  # what the child printed just before it exited
            os.set_blocking(out_r, False)
            while True:
                try:
                    data = os.read(out_r, 65536)
                except BlockingIOError:
                    break  # a leftover process still holds the write end
                if not data:
                    out_open = False
                    break
                if len(out_buf) < STDOUT_CAP:
                    out_buf += data[: STDOUT_CAP - len(out_buf)]
        return {"timed_out": timed_out, "status": status, "eof": not out_open,
                "stdout": out_buf.decode("utf-8", "replace")}

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
        if mode == "kill_all":
            try:
                os.kill(-1, signal.SIGKILL)  # our own pid namespace: spares us and init
            except ProcessLookupError:
                pass
        elif mode == "uid":
            pid = os.fork()
            if pid == 0:  # as the job's uid, kill(-1) reaches exactly the job's processes
                try:
                    os.setuid(self.cfg["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        else:
            for _ in range(100):
                kids = _children(os.getpid())
                if not kids:
                    break
                for kid in kids:
                    self.kill(kid)
                self.reap_orphans(block_for=0.01)

    def reap_orphans(self, block_for: float = 0.0) -> None:
        end = time.perf_counter() + block_for
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                if time.perf_counter() >= end:
                    return
                time.sleep(0.001)


def parse_records(data: bytes, nonce: bytes) -> tuple[list[dict], bool]:
    """Split verdict bytes into records; anything without the nonce marks a forgery."""
    records, forged = [], False
    for line in data.split(b"\n"):
        if not line:
            continue
        head, _, body = line.partition(b" ")
        if head != nonce:
            forged = True
            continue
        try:
            records.append(json.loads(body))
        except ValueError:
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
                      harness.behaviour_hash(marker), death])
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


def _children(ppid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == ppid:
            kids.append(int(name))
    return kids


def _remove(path: str) -> None:
    try:
        os.rmdir(path)  # the common case: the job left its scratch dir empty
    except OSError as err:
        if err.errno != errno.ENOTEMPTY and err.errno != errno.EEXIST:
            raise

        def unlock(func, p, _exc):  # a candidate may have chmod-ed its files to 000
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

        shutil.rmtree(path, onerror=unlock)


def _preload(names: list[str]) -> None:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # a module missing here is simply not preloaded


def main() -> None:
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _preload(cfg["preload"])
    import gc

    gc.collect()
    gc.freeze()  # children's GC passes then skip the server's objects: fewer page copies
    Server(cfg).serve()


if __name__ == "__main__":
    main()
