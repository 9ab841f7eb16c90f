"""One worker process as seen from the caller: start it, talk to it, kill it.

A worker is a bubblewrap sandbox (tier 1) or a plain process (tier 2) running
``server.py``; jobs go in as JSON lines on its stdin, results come back on its stdout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections import deque

from ucoder.sandbox.jobs import Job
from ucoder.sandbox.tiers import worker_command, worker_config, worker_env

START_TIMEOUT_S = 60.0


class Worker:
    """One fork server process and the jobs it owes results for."""

    def __init__(self, tier: str, index: int, scratch_root: str, cpu: int | None = None):
        if tier != "bwrap":  # bwrap workers each have a private /tmp of their own
            scratch_root = os.path.join(scratch_root, f"w{index}")
            os.makedirs(scratch_root, mode=0o711, exist_ok=True)
        cfg = worker_config(tier, index, "/tmp" if tier == "bwrap" else scratch_root, cpu)
        self.index, self.uid = index, cfg["uid"]  # tier 2: the index picks uid and dir
        cmd = worker_command(tier, json.dumps(cfg))
        info_r = info_w = None
        if tier == "bwrap":  # bwrap reports the host pid of its pid namespace's init
            info_r, info_w = os.pipe()
            cmd[1:1] = ["--info-fd", str(info_w)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env(),
            cwd=cfg["scratch_root"], start_new_session=True, bufsize=0,
            pass_fds=() if info_w is None else (info_w,))
        self.ns_init: int | None = None
        self._info_r = info_r  # read in wait_ready: the workers start side by side
        if info_w is not None:
            os.close(info_w)
        self.out_fd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self.inflight: deque[tuple[int, Job]] = deque()
        self.head_since = time.monotonic()
        self.tier = tier
        self.info: dict | None = None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Worker:
        """Wait for the server's hello (workers start in parallel, then all wait)."""
        if self._info_r is not None:
            self.ns_init, self._info_r = _read_info(self._info_r), None
        hello = self._read_line(timeout)
        if not hello or not json.loads(hello).get("hello"):
            self.kill()
            raise RuntimeError(f"sandbox worker ({self.tier}) failed to start; command: "
                               f"{' '.join(worker_command(self.tier, '<cfg>'))}")
        self.info = json.loads(hello)
        return self

    def _read_line(self, timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = max(end - time.monotonic(), 0.0)  # 0: still take what has arrived
            if not select.select([self.out_fd], [], [], left)[0]:
                return None
            data = os.read(self.out_fd, 1 << 16)
            if not data:
                return None
            self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return line

    def send(self, index: int, job: Job, timeout: float, memory_mb: int) -> None:
        if not self.inflight:
            self.head_since = time.monotonic()
        self.inflight.append((index, job))
        msg = {"i": index, "code": job.code, "tests": job.tests, "timeout": timeout,
               "memory_mb": memory_mb}
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())  # raw: writes it all

    def take_lines(self, data: bytes) -> list[dict]:
        self.buf += data
        *lines, rest = bytes(self.buf).split(b"\n")
        self.buf = bytearray(rest)
        return [json.loads(line) for line in lines if line]

    def kill(self) -> None:
        if self._info_r is not None:  # killed before it was ready: learn its pid 1 first
            self.ns_init, self._info_r = _read_info(self._info_r), None
        # Under bwrap, killing the namespace's init takes every process in it along;
        # otherwise the process group holds server and spawner (jobs die with them).
        for pid, fn in ((self.ns_init, os.kill), (self.proc.pid, os.killpg)):
            try:
                if pid:
                    fn(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()  # the server sweeps and exits on EOF
        except OSError:
            pass

    def close(self) -> None:
        self.close_input()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def _read_info(fd: int) -> int | None:
    """The ``child-pid`` from bwrap's ``--info-fd`` JSON (None if bwrap said nothing)."""
    data = b""
    try:
        while select.select([fd], [], [], START_TIMEOUT_S)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None
