"""The sandbox's contract: API shapes, verdicts, behaviour hashes, bad input, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ucoder.sandbox import Job, JobError, Result, Sandbox, TestResult, job_from_dict
from ucoder.sandbox.canon import behaviour_hash, canonical_repr
from ucoder.sandbox.tiers import PRELOAD, _reachable_by_others, choose_tier

GOOD = "def f(x):\n    return x\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, timeout=2.0, memory_mb=256) as box:
        yield box


def test_api_example_from_the_contract(sb):
    [r] = sb.run([Job(id="a", code=GOOD, tests=["assert f(1) == 1", "f(2)"])], progress=False)
    assert isinstance(r, Result) and r.id == "a" and r.status == "passed" and r.error is None
    assert r.tier == sb.tier == choose_tier("auto")
    assert [type(t) for t in r.tests] == [TestResult, TestResult]
    assert r.tests[0] == TestResult(True, "passed", None, r.tests[0].hash, None)
    assert r.tests[1].output == "2" and r.tests[1].hash == behaviour_hash("2")
    d = r.to_dict()
    assert set(d) >= {"id", "status", "tests", "duration_s", "tier", "error"}
    assert d["tests"][1] == {"passed": True, "status": "passed", "output": "2",
                             "hash": behaviour_hash("2"), "error": None}
    json.dumps(d)


def test_test_statuses_and_job_status(sb):
    job = Job(id="mix", code=GOOD, tests=["assert f(1) == 2", "f(1) / 0", "f('x')",
                                          "assert f(3) == 3"])
    [r] = sb.run([job])
    assert r.status == "failed"
    assert [t.status for t in r.tests] == ["failed", "error", "passed", "passed"]
    assert r.tests[1].error == "ZeroDivisionError: division by zero"
    assert r.tests[1].hash == behaviour_hash("<raise ZeroDivisionError>")
    assert r.tests[2].output == "'x'"


def test_code_error_skips_the_tests(sb):
    [r] = sb.run([Job(id="syntax", code="def f(:\n", tests=["f(1)", "1"])])
    assert r.status == "failed" and r.error.startswith("the code raised SyntaxError")
    assert [t.status for t in r.tests] == ["skipped", "skipped"]
    assert all(t.hash is None and not t.passed for t in r.tests)


def test_results_keep_input_order_and_dicts_are_accepted(sb):
    jobs = [{"id": f"j{i}", "code": f"v = {i}\n", "tests": ["v"]} for i in range(12)]
    results = sb.run(jobs)
    assert [r.id for r in results] == [f"j{i}" for i in range(12)]
    assert [r.tests[0].output for r in results] == [str(i) for i in range(12)]


def test_per_job_overrides(sb):
    slow = "import time\ntime.sleep(0.6)\n"
    results = sb.run([{"id": "short", "code": slow, "tests": ["1"], "timeout": 0.3},
                      {"id": "long", "code": slow, "tests": ["1"], "timeout": 3},
                      {"id": "mem", "code": "x = bytearray(200 * 2**20)\n", "tests": ["1"],
                       "memory_mb": 128},
                      {"id": "mem-ok", "code": "x = bytearray(200 * 2**20)\n", "tests": ["1"],
                       "memory_mb": 1024}])
    assert [r.status for r in results] == ["timeout", "passed", "memory", "passed"]


def test_bad_dicts_get_error_results_and_the_rest_runs(sb):
    results = sb.run([{"id": "ok", "code": GOOD, "tests": ["f(1)"]},
                      {"id": "no-tests", "code": GOOD},
                      {"id": "bad-tests", "code": GOOD, "tests": "f(1)"},
                      {"id": 7, "code": GOOD, "tests": []},
                      {"id": "bad-timeout", "code": GOOD, "tests": [], "timeout": -1}])
    assert [r.status for r in results] == ["passed", "error", "error", "error", "error"]
    assert "job 1: field 'tests' is missing" in results[1].error
    assert "field 'tests' must be a list of strings, got str" in results[2].error
    assert "field 'id' must be a string" in results[3].error and results[3].id is None
    assert "field 'timeout'" in results[4].error


def test_job_validation_names_the_field():
    with pytest.raises(JobError, match=r"line 3: field 'tests\[1\]' must be a string, got int"):
        job_from_dict({"id": "a", "code": "", "tests": ["1", 2]}, where="line 3")
    with pytest.raises(JobError, match="field 'memory_mb'"):
        job_from_dict({"id": "a", "code": "", "tests": [], "memory_mb": 1.5})
    with pytest.raises(JobError, match="field 'tests' has 1001 tests"):
        job_from_dict({"id": "a", "code": "", "tests": ["1"] * 1001})
    job = job_from_dict({"id": "a", "code": "x", "tests": [], "timeout": 2})
    assert job == Job(id="a", code="x", tests=[], timeout=2.0, memory_mb=None)


def test_sandbox_arguments_are_checked():
    with pytest.raises(ValueError, match="workers=0"):
        Sandbox(workers=0)
    with pytest.raises(ValueError, match="timeout=0"):
        Sandbox(timeout=0)
    with pytest.raises(ValueError, match="tier='docker'"):
        Sandbox(tier="docker")


def test_smallest_memory_limit_still_runs_python(sb):
    [r] = sb.run([{"id": "tiny", "code": GOOD, "tests": ["f(1)"], "memory_mb": 64}])
    assert r.status == "passed", r


def test_without_with_block_and_close():
    box = Sandbox(workers=1, timeout=2.0)
    assert box.run([Job(id="a", code=GOOD, tests=["f(1)"])])[0].passed
    pids = box.worker_pids
    box.close()
    box.close()  # idempotent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        box.run([])


def test_start_boots_workers_that_run_takes_in_as_they_come_up():
    with Sandbox(workers=3, timeout=2.0) as box:
        assert box.start() is box and box.start() is box  # idempotent
        jobs = [Job(id=str(i), code=GOOD, tests=[f"assert f({i}) == {i}"]) for i in range(9)]
        assert all(r.passed for r in box.run(jobs))
        assert len(set(box.worker_pids)) == 3
        # A caller that comes back after the start deadline still gets hellos that
        # arrived in time (they wait in the pipe) rather than a start-up failure.
        late = Sandbox(workers=2, timeout=2.0).start()
        time.sleep(0.5)
        late._start_deadline = time.monotonic() - 1
        assert all(r.passed for r in late.run(jobs))
        late.close()


def _cpus_seen_by_jobs(box: Sandbox, n: int) -> set[tuple[int, ...]]:
    jobs = [Job(id=str(i), code="import os", tests=["sorted(os.sched_getaffinity(0))"])
            for i in range(n)]
    return {tuple(json.loads(r.tests[0].output)) for r in box.run(jobs)}


def test_default_pool_keeps_each_worker_on_one_cpu_and_uses_them_all():
    cpus = sorted(os.sched_getaffinity(0))
    with Sandbox(timeout=2.0) as box:
        assert box.n_workers == len(cpus) == len(box.start().worker_pids)  # all up
        seen = _cpus_seen_by_jobs(box, 6 * box.n_workers)
    assert {c for s in seen for c in s} == set(cpus) and all(len(s) == 1 for s in seen)
    if len(cpus) > 1:  # a pool that cannot cover the cores evenly is not pinned
        with Sandbox(workers=len(cpus) + 1, timeout=2.0) as box:
            assert _cpus_seen_by_jobs(box, 4) == {tuple(cpus)}


def test_sandbox_or_new_leaves_a_given_sandbox_open_and_closes_its_own(sb):
    from ucoder.sandbox import sandbox_or_new

    with sandbox_or_new(sb, 3.0) as box:
        assert box is sb
    assert sb.run([Job(id="a", code=GOOD, tests=["assert f(1) == 1"])])[0].passed
    with sandbox_or_new(None, 3.0) as box:
        assert box is not sb and box.timeout == 3.0
        assert box.run([Job(id="b", code=GOOD, tests=["f(1)"])])[0].passed
    with pytest.raises(RuntimeError, match="closed"):
        box.run([])


def test_non_preloaded_and_site_packages_imports(sb):
    if sb.tier == "rlimit" and not _reachable_by_others(os.path.dirname(os.__file__)):
        pytest.skip("the stdlib is not readable by the job uid here (warned at start-up)")
    assert "wave" not in PRELOAD
    tests = ["__import__('wave').__name__"]
    try:
        import numpy  # noqa: F401

        tests.append("__import__('numpy').arange(3).sum().item()")
    except ImportError:
        pass
    [r] = sb.run([Job(id="imports", code="", tests=tests)])
    assert r.status == "passed", r
    assert r.tests[0].output == "'wave'"


# ------------------------------------------------------------------ behaviour hashes
def test_equal_behaviour_gets_equal_hashes_across_candidates(sb):
    tests = ["f([3, 1, 2])", "f({'b': 1, 'a': 2})", "g()", "h()", "f(1) / 0"]
    a = Job(id="a", code="def f(x):\n    return sorted(x) if isinstance(x, list) else x\n"
                         "def g():\n    return {'pear', 'apple', 'fig'}\n"
                         "def h():\n    return object()\n", tests=tests)
    b = Job(id="b", code="def f(x):\n    if isinstance(x, list):\n        x = list(x); x.sort()\n"
                         "    if isinstance(x, dict):\n        return {'a': 2, 'b': 1}\n"
                         "    return x\n"
                         "def g():\n    return set(['fig', 'apple', 'pear'])\n"
                         "class O: pass\n"
                         "def h():\n    return object()\n", tests=tests)
    c = Job(id="c", code="def f(x):\n    return x\ndef g():\n    return {'fig'}\n"
                         "def h():\n    return 1\n", tests=tests)
    ra, rb, rc = sb.run([a, b, c])
    assert [t.hash for t in ra.tests] == [t.hash for t in rb.tests]
    assert ra.tests[0].hash != rc.tests[0].hash and ra.tests[2].hash != rc.tests[2].hash
    assert ra.tests[4].hash == rc.tests[4].hash  # same exception type, any message
    assert ra.tests[3].output == "<object object at 0x?>"


def test_snippets_are_compiled_once_per_worker_and_big_ones_are_not_kept():
    from ucoder.sandbox import harness

    harness._compile_cached.cache_clear()
    tests = ["assert f(1) == 1", "f(2)"]
    first = harness.compile_job(GOOD, tests)
    assert harness.compile_job(GOOD, tests) == first
    assert harness._compile_cached.cache_info().hits == 3
    big = GOOD + "x = 1\n" * 1000
    harness.compile_job(big, tests)
    assert harness._compile_cached.cache_info().currsize == 3  # the big code is not kept


def test_verdict_records_need_the_nonce_and_must_be_json_objects():
    from ucoder.sandbox.verdicts import parse_records

    n = b"0123456789abcdef"
    good = n + b' {"k":"c","ok":true}\n' + n + b' {"k":"e"}\n'
    assert parse_records(good, n) == ([{"k": "c", "ok": True}, {"k": "e"}], False)
    for junk in (b"fedcba9876543210 {\"k\":\"e\"}\n", n + b" [1]\n", n + b" 1,2\n",
                 n + b" {\"k\":\n", b"no nonce at all\n"):
        records, forged = parse_records(good + junk, n)
        assert forged and records == [{"k": "c", "ok": True}, {"k": "e"}], junk


def test_canonical_repr():
    assert canonical_repr({3, 1, 2}) == "{1, 2, 3}"
    assert canonical_repr({"b": [1, (2,)], "a": frozenset({2, 1})}) == \
        "{'a': frozenset({1, 2}), 'b': [1, (2,)]}"
    loop: list = [1]
    loop.append(loop)
    assert canonical_repr(loop) == "[1, ...]"
    long = canonical_repr(list(range(10 ** 6)), limit=100)
    assert long.endswith("…") and len(long) < 120
    assert canonical_repr(10 ** 5000).startswith("<int of 16610 bits")

    class Bad:
        def __repr__(self):
            raise ValueError("no")

    assert canonical_repr(Bad()) == "<Bad: repr raised ValueError>"
    assert behaviour_hash("x") == behaviour_hash("x") and len(behaviour_hash("x")) == 16


def test_genuine_accepts_builtin_values_and_refuses_fakes():
    from collections import Counter, OrderedDict

    from ucoder.sandbox.genuine import NotGenuine, genuine

    loop: list = [1]
    loop.append(loop)
    for value in (None, True, 1, 2.5, 1j, "s", b"b", [1, (2,)], {1: {2}}, frozenset({3}),
                  OrderedDict(a=1), range(2), object(), int, loop):
        assert genuine(value) is value
    nested = [Counter("aa")]
    assert genuine(nested) == [{"a": 2}] and type(genuine(nested)[0]) is dict

    class Sub(int):
        pass

    class Meta(type):
        __flags__ = property(lambda cls: 1 << 8)  # posing as a C type

    class Posing(metaclass=Meta):
        pass

    for fake in (Sub(1), [Sub(1)], {Sub(1): 1}, {1: Posing()}, (x for x in [1]), {}.keys()):
        with pytest.raises(NotGenuine):
            genuine(fake)


# ------------------------------------------------------------------ the CLI
def test_cli_bad_lines_get_error_results_and_exit_0(tmp_path: Path):
    lines = [
        json.dumps({"id": "good", "code": GOOD, "tests": ["assert f(1) == 1", "f(2)"]}),
        "{not json",
        json.dumps({"id": "missing", "code": GOOD}),
        json.dumps({"id": "wrongtype", "code": 5, "tests": []}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"id": "bad", "code": GOOD, "tests": ["assert f(1) == 2"]}),
    ]
    src, out = tmp_path / "jobs.jsonl", tmp_path / "results.jsonl"
    src.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "ucoder", "sandbox", "run", str(src),
                           "--output", str(out), "--workers", "1", "--timeout", "3",
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["passed", "error", "error", "error", "error",
                                           "failed"]
    assert rows[0]["tests"][1]["output"] == "2" and rows[0]["tier"] in ("bwrap", "rlimit")
    assert rows[1]["error"].startswith("line 2: not valid JSON")
    assert rows[2]["error"] == "line 3: field 'tests' is missing (required: id, code, tests)"
    assert rows[2]["id"] == "missing"
    assert rows[3]["error"] == "line 4: field 'code' must be a string, got int"
    assert rows[4]["error"].startswith("line 5:")
    assert "1 jobs" not in proc.stderr and "6 jobs" in proc.stderr


def test_cli_missing_input_file_is_a_clear_error(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "ucoder", "sandbox", "run",
                           str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read JOBS.jsonl" in proc.stderr


def test_unicode_code_tests_and_outputs(sb):
    job = Job(id="ü", code="def greet(n):\n    return f'héllo {n} 😀'\n",
              tests=["greet('wörld')", "assert greet(1).endswith('😀')", "'\\ud800'"])
    [r] = sb.run([job])
    assert r.status == "passed", r
    assert r.tests[0].output == "'héllo wörld 😀'" and r.tests[2].output == "'\\ud800'"


def test_workers_started_from_a_finished_thread_keep_working():
    import threading

    box = Sandbox(workers=1, timeout=2.0)
    try:
        first = []
        t = threading.Thread(target=lambda: first.extend(box.run([Job("a", GOOD, ["f(1)"])])))
        t.start()
        t.join()  # the thread that started the workers is gone now
        pids = box.worker_pids
        time.sleep(0.2)
        assert box.run([Job("b", GOOD, ["f(2)"])])[0].passed and first[0].passed
        assert box.worker_pids == pids
    finally:
        box.close()


def test_candidate_code_gets_no_future_flags_from_the_sandbox(sb):
    # The sandbox's own modules use `from __future__ import annotations`; compiling the
    # candidate must not pass that on (its annotations would turn into strings).
    [r] = sb.run([Job(id="ann", code="def f(x: int) -> int:\n    return x\n",
                      tests=["f.__annotations__['x'] is int", "f(\n"])])
    assert r.tests[0].output == "True"
    assert r.tests[1].status == "error" and r.tests[1].error.startswith("SyntaxError")
    assert r.status == "failed"
