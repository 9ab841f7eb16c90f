"""What goes into the sandbox and what comes out: Job, Result, TestResult, input checks.

The JSONL shapes of the ``ucoder sandbox run`` contract are the ``to_dict`` forms of
these dataclasses; :func:`job_from_dict` checks an input line field by field so that a
bad line becomes one ``error`` result that names the line and the field, never an
exception that stops the batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

JOB_STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "error")
TEST_STATUSES = ("passed", "failed", "error", "timeout", "skipped")

# Bounds on per-job overrides: generous, but a typo like "timeout": 5000 should not
# hold a worker for an hour, and an address space under 64 MiB cannot start Python.
MAX_TIMEOUT_S = 600.0
MIN_MEMORY_MB = 64
MAX_MEMORY_MB = 1 << 20
MAX_TESTS = 1000  # the verdict area holds this many records
MAX_JOB_BYTES = 512 << 10  # code + tests, UTF-8; the shared job area holds 4 MiB


@dataclass
class Job:
    """One candidate program and the tests to run after it.

    Attributes:
        id: caller's identifier, copied to the result.
        code: Python source executed first (module level, ``__name__ != "__main__"``).
        tests: snippets run one by one in the same namespace: an ``assert`` statement
            (pass/fail) or an expression whose value is recorded.
        timeout: wall-clock seconds for the whole job (code and all tests);
            ``None`` takes the sandbox default.
        memory_mb: address-space limit in MiB; ``None`` takes the sandbox default.
    """

    id: str
    code: str
    tests: list[str] = field(default_factory=list)
    timeout: float | None = None
    memory_mb: int | None = None


@dataclass
class TestResult:
    """The outcome of one test snippet.

    ``status``: ``passed`` (assert held / expression evaluated), ``failed``
    (AssertionError), ``error`` (any other exception, or the process died during it),
    ``timeout`` (the job's clock ran out during it) or ``skipped`` (never reached).
    ``output`` is the canonical, truncated repr of an expression's value; ``hash`` a
    short stable hash of the behaviour (the full canonical repr, or the exception type).
    """

    __test__ = False  # not a pytest test class

    passed: bool
    status: str
    output: str | None = None
    hash: str | None = None
    error: str | None = None


@dataclass
class Result:
    """The verdict for one job; ``to_dict()`` is its JSONL output line.

    ``status``: ``passed`` (the code and every test ran to completion and passed),
    ``failed``, ``timeout``, ``memory`` (a MemoryError under the address-space limit),
    ``crashed`` (the process died or broke the verdict protocol) or ``error`` (bad
    input or a sandbox failure). ``tier`` names the isolation the job ran under;
    ``stdout`` holds the first bytes the program printed (stdout and stderr together).
    """

    id: str | None
    status: str
    tests: list[TestResult] = field(default_factory=list)
    duration_s: float = 0.0
    tier: str | None = None
    error: str | None = None
    stdout: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        """The JSONL output line (a plain dict)."""
        # Written out rather than dataclasses.asdict: this runs once per job, and asdict's
        # recursive deep copy costs more than the rest of the bookkeeping.
        return {"id": self.id, "status": self.status,
                "tests": [{"passed": t.passed, "status": t.status, "output": t.output,
                           "hash": t.hash, "error": t.error} for t in self.tests],
                "duration_s": self.duration_s, "tier": self.tier, "error": self.error,
                "stdout": self.stdout}


class JobError(ValueError):
    """A job (JSONL line or dict) does not have the required shape; names the field."""

    def __init__(self, where: str, field_name: str, reason: str):
        self.where, self.field = where, field_name
        super().__init__(f"{where}: field '{field_name}' {reason}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def job_from_dict(obj: Any, where: str = "job") -> Job:
    """Check one input object and build a :class:`Job`.

    Args:
        obj: the parsed JSON object (or a dict given to the Python API).
        where: how to name the input in errors, e.g. ``"line 7"``.

    Raises:
        JobError: naming ``where``, the field and what is allowed.
    """
    if isinstance(obj, Job):
        obj = asdict(obj)
    if not isinstance(obj, dict):
        raise JobError(where, "<line>", f"must be a JSON object, got {_type_name(obj)}")
    for name in ("id", "code", "tests"):
        if name not in obj:
            raise JobError(where, name, "is missing (required: id, code, tests)")
    if not isinstance(obj["id"], str):
        raise JobError(where, "id", f"must be a string, got {_type_name(obj['id'])}")
    if not isinstance(obj["code"], str):
        raise JobError(where, "code", f"must be a string, got {_type_name(obj['code'])}")
    tests = obj["tests"]
    if not isinstance(tests, list):
        raise JobError(where, "tests", f"must be a list of strings, got {_type_name(tests)}")
    if len(tests) > MAX_TESTS:
        raise JobError(where, "tests", f"has {len(tests)} tests; at most {MAX_TESTS} allowed")
    for i, test in enumerate(tests):
        if not isinstance(test, str):
            raise JobError(where, f"tests[{i}]", f"must be a string, got {_type_name(test)}")
    size = len(obj["code"].encode("utf-8", "surrogatepass")) + sum(
        len(t.encode("utf-8", "surrogatepass")) for t in tests)
    if size > MAX_JOB_BYTES:
        raise JobError(where, "code", f"and tests total {size} bytes; at most "
                       f"{MAX_JOB_BYTES} allowed")
    timeout = obj.get("timeout")
    if timeout is not None:
        ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if not ok or not (0 < timeout <= MAX_TIMEOUT_S) or math.isnan(timeout):
            raise JobError(
                where, "timeout", f"must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], "
                f"got {timeout!r}")
        timeout = float(timeout)
    memory = obj.get("memory_mb")
    if memory is not None:
        ok = isinstance(memory, int) and not isinstance(memory, bool)
        if not ok or not (MIN_MEMORY_MB <= memory <= MAX_MEMORY_MB):
            raise JobError(
                where, "memory_mb", f"must be an integer number of MiB in "
                f"[{MIN_MEMORY_MB}, {MAX_MEMORY_MB}], got {memory!r}")
    return Job(id=obj["id"], code=obj["code"], tests=list(tests), timeout=timeout,
               memory_mb=memory)


def error_result(job_id: Any, message: str, tier: str | None = None) -> Result:
    """A Result for a job that could not run (bad input or a sandbox failure)."""
    return Result(id=job_id if isinstance(job_id, str) else None, status="error",
                  tests=[], duration_s=0.0, tier=tier, error=message)
