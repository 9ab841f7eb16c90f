"""The child side of a job (stdlib only): enter the limits, run the candidate, report.

Runs in the process cloned for one job. Job and verdicts travel through a shared-memory
area mapped by the server (no pipe wake-ups per test). Layout: at ``JOB_OFFSET`` the
job, written by the server: the 16-byte nonce, timeout (f64), memory_mb, number of
tests (u32 each), then code and tests as u32-length-prefixed UTF-8 (a flat layout: a
JSON parse would touch far more memory in every job); at 0 a u64 length of the valid
record bytes, then one line per record, ``<nonce> <json>``, written by the harness.
The length is stored after each record, so a job killed mid-write leaves only whole
records. The candidate's stdout/stderr go to a pipe.
"""

from __future__ import annotations

import builtins
import functools
import gc
import json
import marshal
import math
import os
import resource
import signal
import struct
import sys

if __package__:
    from ucoder.sandbox.canon import behaviour_hash, canonical_repr
    from ucoder.sandbox.genuine import GUARD, genuine, guard_asserts
else:  # imported by server.py started as a script inside the isolation
    from canon import behaviour_hash, canonical_repr
    from genuine import GUARD, genuine, guard_asserts

PR_SET_PDEATHSIG = 1
HEADER = struct.Struct("<Q")
JOB_OFFSET = 4 << 20  # records below, the job above
AREA_SIZE = 8 << 20
RECORD_BYTES = 3072  # one record at most (1000 tests fit below JOB_OFFSET)
OUTPUT_CHARS = 256  # TestResult.output is cut to this many characters
ERROR_CHARS = 300
# Bound before any candidate code runs: a candidate may patch the modules later.
_exit, _kill, _pack = os._exit, os.kill, HEADER.pack_into
_quote = json.encoder.encode_basestring_ascii  # C; json.dumps builds an encoder per call


def _json(rec: dict) -> bytes:
    """A record as a JSON object (keys are plain; values str, bool, int or None)."""
    parts = []
    for key, value in rec.items():
        if value is None:
            continue
        if value is True or value is False:
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _quote(value)
        parts.append(f'"{key}":{text}')
    return ("{" + ",".join(parts) + "}").encode()
_prctl = None  # libc's prctl, looked up once by prepare_spawner where jobs need it
OK_HASH = behaviour_hash("<ok>")  # a statement that ran without raising


JOB_HEAD = struct.Struct("<16sdII")


def compile_job(code: str, tests: list[str]) -> bytes:
    """Server side: compile (never run) the code and tests into one marshal blob.

    Compiling here rather than in each job process spares every job the compiler's
    memory churn (a sixth of its page copies). ``dont_inherit``: the candidate must not
    get this module's ``from __future__`` flags. A snippet that does not compile becomes
    ``(None, exception type, message)`` and raises at its turn in the job, as it would.
    """
    return marshal.dumps((_compile(code, "<candidate>", False),
                          [_compile(t, f"<test {i}>", True) for i, t in enumerate(tests)]))


def _compile(src: str, name: str, expr_ok: bool) -> tuple:
    # Small snippets (every test, most candidates) are compiled once per worker: a
    # problem's tests run against each of its candidates, and samples repeat. Large
    # ones are not kept, so the cache stays a few MiB.
    if len(src) <= CACHED_SNIPPET_CHARS:
        return _compile_cached(src, name, expr_ok)
    return _compile_one(src, name, expr_ok)


def _compile_one(src: str, name: str, expr_ok: bool) -> tuple:
    try:
        if expr_ok and not src.lstrip().startswith("assert"):
            try:
                return True, compile(src, name, "eval", dont_inherit=True)
            except SyntaxError:
                pass
        if expr_ok and "assert" in src:  # a test (expr_ok) with asserts: guard them
            return False, compile(guard_asserts(src, name), name, "exec", dont_inherit=True)
        return False, compile(src, name, "exec", dont_inherit=True)
    except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError...
        return None, type(exc).__name__, _err(exc)


CACHED_SNIPPET_CHARS = 2048


_compile_cached = functools.lru_cache(maxsize=4096)(_compile_one)  # code objects are immutable


def put_job(area, nonce: bytes, job: dict, blob: bytes) -> None:
    """Server side: place the next job (see the module docstring) and clear the records."""
    if JOB_HEAD.size + len(blob) > AREA_SIZE - JOB_OFFSET:
        raise ValueError(f"compiled job of {len(blob)} bytes does not fit the job area")
    JOB_HEAD.pack_into(area, JOB_OFFSET, nonce, job["timeout"], job["memory_mb"], len(blob))
    start = JOB_OFFSET + JOB_HEAD.size
    area[start:start + len(blob)] = blob
    HEADER.pack_into(area, 0, HEADER.size)


def read_records(area) -> bytes:
    """Server side: the record bytes the harness wrote (never beyond its region)."""
    end = min(max(HEADER.unpack_from(area, 0)[0], HEADER.size), JOB_OFFSET)
    return area[HEADER.size:end]


def child_main(area, out: int, cfg: dict) -> None:
    """Entry point of a freshly cloned job process; never returns."""
    nonce, timeout, memory_mb, size = JOB_HEAD.unpack_from(area, JOB_OFFSET)
    start = JOB_OFFSET + JOB_HEAD.size
    code, tests = marshal.loads(area[start:start + size])
    enter(cfg, timeout, memory_mb, out)
    run(code, tests, area, nonce, cfg["sweep"] == "uid")


def _err(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException:  # a candidate's __str__ may raise
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def run(code: tuple, tests: list[tuple], area, nonce: bytes, kill_all: bool,
        finish=_exit) -> None:
    """Run the compiled candidate and tests (:func:`compile_job`), recording each outcome
    in ``area``; ends with ``finish(0)`` (the process exits).

    ``kill_all``: the job has a uid of its own, so ``kill(-1)`` before the final record
    removes every process it started, detached or not.
    """
    pos = [HEADER.size]
    mem_marker = nonce + b' {"k":"m"}\n'  # pre-built: must be writable with no memory left

    def put(line: bytes) -> None:
        end = pos[0] + len(line)
        area[pos[0]:end] = line
        _pack(area, 0, end)  # after the data: a reader never sees half a record
        pos[0] = end

    def report(rec: dict) -> None:
        try:
            line = nonce + b" " + _json(rec) + b"\n"
            if len(line) > RECORD_BYTES:  # escapes can make a cut text long in bytes
                rec.update(o=rec.get("o") and rec["o"][:64], e=rec.get("e") and rec["e"][:64])
                line = nonce + b" " + _json(rec) + b"\n"
            put(line)
        except MemoryError:
            put(mem_marker)
            _exit(3)

    g: dict = {"__name__": "__candidate__", "__builtins__": builtins}
    if code[0] is None:  # the code did not compile
        report({"k": "c", "ok": False, "e": code[2]})
    else:
        try:
            exec(code[1], g)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are failures too
            exc.__traceback__ = None  # frees what a memory bomb held before we report
            report({"k": "c", "ok": False, "e": _err(exc),
                    "m": isinstance(exc, MemoryError)})
        else:
            report({"k": "c", "ok": True})
            g[GUARD] = genuine  # after the candidate's code, which cannot preset it
            for i, test in enumerate(tests):
                report(_run_test(i, test, g))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    if kill_all:
        try:
            _kill(-1, signal.SIGKILL)
        except OSError:
            pass
    report({"k": "e"})
    finish(0)


def _run_test(i: int, test: tuple, g: dict) -> dict:
    is_expr = test[0]
    if is_expr is None:  # did not compile: fails at its turn, like any other exception
        return {"k": "t", "i": i, "s": "error", "e": test[2],
                "h": behaviour_hash(f"<raise {test[1]}>")}
    try:
        value = eval(test[1], g)
        if not is_expr:
            return {"k": "t", "i": i, "s": "passed", "h": OK_HASH}
        text = canonical_repr(genuine(value))  # a fake's repr must not pose as a value
        return {"k": "t", "i": i, "s": "passed", "o": text[:OUTPUT_CHARS],
                "h": behaviour_hash(text)}
    except BaseException as exc:
        exc.__traceback__ = None
        status = "failed" if isinstance(exc, AssertionError) else "error"
        return {"k": "t", "i": i, "s": status, "e": _err(exc),
                "h": behaviour_hash(f"<raise {type(exc).__name__}>"),
                "m": isinstance(exc, MemoryError)}


def prepare_spawner(cfg: dict) -> None:
    """Once, in the spawner: everything every job shares, so each job does less.

    Limits that do not depend on the job, the group identity (the uid stays root until
    the job, which keeps the capabilities the spawner needs), no garbage collection (a
    job lives milliseconds; collections would only copy shared pages) and one random
    seed that every job starts from (``spawning.preload`` kept ``random`` from
    re-seeding in every child, which costs time and makes behaviour differ by run).
    """
    limits = [(resource.RLIMIT_FSIZE, cfg["fsize_mb"] << 20),
              (resource.RLIMIT_NOFILE, cfg["nofile"]), (resource.RLIMIT_CORE, 0)]
    if cfg["nproc"]:
        limits.append((resource.RLIMIT_NPROC, cfg["nproc"]))
    for res, value in limits:
        resource.setrlimit(res, (value, value))
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
    gc.disable()
    if "random" in sys.modules:
        sys.modules["random"].seed(0)
    if cfg["sweep"] in ("uid", "children"):
        import ctypes

        global _prctl
        _prctl = ctypes.CDLL(None).prctl
    warm_up()


class _WarmedUp(Exception):
    pass


def _end_warm_up(_status: int) -> None:
    raise _WarmedUp


def warm_up(runs: int = 64) -> None:
    """Run the harness on a harmless job ``runs`` times, in the spawner.

    CPython counts the calls of every function and rewrites (quickens, then
    specialises) its bytecode in place as it warms up. Code that first runs in a job
    would do that writing in every job, each write a page copy; warmed up here, the jobs
    find it done.
    """
    code, tests = marshal.loads(compile_job(
        "def f(x):\n    return x\n",
        ["assert f(1) == 1", "f([1, 'a', 2.5, None, (True,), {3: {4}}])", "assert f(0)",
         "f(1 / 0)", "f"]))
    area = bytearray(RECORD_BYTES * (len(tests) + 3))
    for _ in range(runs):
        try:
            run(code, tests, area, b"0" * 16, False, finish=_end_warm_up)
        except _WarmedUp:
            pass


def enter(cfg: dict, timeout: float, memory_mb: int, out: int) -> None:
    """In the job's process: session, descriptors, job limits, uid. Order matters.

    The server made fd 0 /dev/null, line-buffered sys.stdout/stderr and set HOME/TMPDIR
    to the (fixed) scratch path; :func:`prepare_spawner` did the rest of the shared work.
    """
    os.setsid()
    os.dup2(out, 1)
    os.dup2(out, 2)
    # Everything else goes, above all the server's job and result pipes.
    os.closerange(3, 1 << 16)
    os.chdir(cfg["scratch"])
    memory = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = math.ceil(timeout) + 1  # a backstop to the wall clock: SIGXCPU, SIGKILL
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if cfg["uid"] is not None:
        os.setuid(cfg["uid"])  # last: it also drops every capability
    if _prctl is not None:
        # Without a pid namespace the job would outlive a dead server; set after setuid,
        # which clears it.
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
