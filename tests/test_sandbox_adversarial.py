"""Adversarial jobs: one test per protection the sandbox claims, run in every tier here.

Each test runs real hostile code and asserts the outcome (verdict, timing, processes,
files, environment). ``bwrap``-only properties skip where bubblewrap does not work;
properties that tier 2 only has as root skip when not root.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from ucoder.sandbox import Job, Sandbox, probe_bwrap

TIMEOUT = 1.0
ROOT = os.geteuid() == 0
BWRAP_OK = probe_bwrap() is None
TIERS = [pytest.param("bwrap", marks=pytest.mark.skipif(
    not BWRAP_OK, reason=f"bubblewrap unavailable: {probe_bwrap()}")), "rlimit"]
CONTROL = Job(id="control", code="def add(a, b):\n    return a + b\n",
              tests=["assert add(1, 2) == 3", "add(2, 3)"])


@pytest.fixture(scope="module", params=TIERS)
def sb(request):
    with Sandbox(workers=2, timeout=TIMEOUT, memory_mb=256, tier=request.param) as box:
        assert box.run([CONTROL])[0].status == "passed"
        yield box


def code(src: str) -> str:
    return textwrap.dedent(src).strip() + "\n"


def run_one(sb: Sandbox, job: Job):
    start = time.monotonic()
    result = sb.run([job])[0]
    return result, time.monotonic() - start


def job_processes(sb: Sandbox) -> list[int]:
    """Pids of every process that runs as one of the sandbox's job uids."""
    uids, found = set(sb.job_uids), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid in uids:
                    found.append(int(name))
            except OSError:
                pass
    return found


def settles(check, seconds: float = 1.0) -> bool:
    """True once ``check()`` holds; SIGKILLed processes take a moment to be reaped."""
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def descendants(pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(name))
    seen, todo = set(), list(pids)
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in seen:
                seen.add(kid)
                todo.append(kid)
    return seen


SPINS = {
    "infinite_loop": "while True:\n    pass\n",
    "ignores_sigterm_sigalrm": code("""
        import signal
        for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        signal.alarm(1)
        while True:
            pass
    """),
    # Catastrophic backtracking runs inside the C regex engine and never checks signals.
    "c_level_spin": "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')\n",
}


@pytest.mark.parametrize("name", sorted(SPINS))
def test_spinning_job_is_killed_within_timeout_plus_1s(sb, name):
    result, wall = run_one(sb, Job(id=name, code=SPINS[name], tests=["1"]))
    assert result.status == "timeout"
    assert result.duration_s <= TIMEOUT + 1.0 and wall <= TIMEOUT + 1.5
    assert [t.status for t in result.tests] == ["skipped"]


def test_timeout_keeps_earlier_test_results(sb):
    job = Job(id="t", code="x = 1\n", tests=["x + 1", "assert x == 1", "while True: pass",
                                            "x"])
    result, wall = run_one(sb, job)
    assert result.status == "timeout" and wall <= TIMEOUT + 1.5
    assert [t.status for t in result.tests] == ["passed", "passed", "timeout", "skipped"]
    assert result.tests[0].output == "2"


@pytest.mark.parametrize("bomb", [
    "x = bytearray(10 ** 12)\n",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
    "s = 'x' * (10 ** 11)\n",
])
def test_memory_bomb_ends_as_memory(sb, bomb):
    result, _ = run_one(sb, Job(id="mem", code=bomb, tests=["1"], timeout=10.0))
    assert result.status == "memory"


def test_memory_bomb_inside_a_test_ends_as_memory(sb):
    grow = "def grow():\n    return [bytearray(10 ** 7) for _ in range(10 ** 6)]\n"
    job = Job(id="mem", code=grow, tests=["1", "len(grow())"], timeout=10.0)
    result, _ = run_one(sb, job)
    assert result.status == "memory"
    assert result.tests[0].status == "passed" and result.tests[1].error == "MemoryError"


def test_fork_bomb_leaves_no_process_behind(sb):
    baseline = descendants(sb.worker_pids)
    bomb = code("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """)
    result, wall = run_one(sb, Job(id="forkbomb", code=bomb, tests=["1"]))
    assert result.status in ("timeout", "crashed") and wall <= TIMEOUT + 1.5
    assert settles(lambda: descendants(sb.worker_pids) == baseline)
    if sb.job_uids:
        assert settles(lambda: job_processes(sb) == [])
    assert sb.run([CONTROL])[0].status == "passed"


def test_detached_daemon_leaves_no_process_behind(sb):
    baseline = descendants(sb.worker_pids)
    daemon = code("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 1024)
                time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
    """)
    result, _ = run_one(sb, Job(id="daemon", code=daemon, tests=["assert True"]))
    assert result.status == "passed"
    assert settles(lambda: descendants(sb.worker_pids) == baseline)
    if sb.job_uids:
        assert settles(lambda: job_processes(sb) == [])


EXITS = {
    "sys_exit_in_code": ("import sys\nsys.exit(0)\n", ["assert True"]),
    "os_exit_in_code": ("import os\nos._exit(0)\n", ["assert True"]),
    "sys_exit_in_test": ("", ["assert True", "__import__('sys').exit(0)", "assert True"]),
    "os_exit_in_test": ("", ["assert True", "__import__('os')._exit(0)", "assert True"]),
    "raise_system_exit": ("def f():\n    raise SystemExit(0)\n", ["f()"]),
    "keyboard_interrupt": ("raise KeyboardInterrupt\n", ["assert True"]),
    # (SIGKILL sent to itself would be ignored under bwrap: the job is pid 1 there.)
    "abort": ("import os\nos.abort()\n", ["assert True"]),
    "os_exit_after_last_test": ("import os\n", ["assert True", "os._exit(0)"]),
}


@pytest.mark.parametrize("name", sorted(EXITS))
def test_exiting_early_is_never_passed(sb, name):
    src, tests = EXITS[name]
    result, _ = run_one(sb, Job(id=name, code=src, tests=tests))
    assert result.status in ("failed", "crashed"), result
    assert not all(t.passed for t in result.tests)


def test_stdout_cannot_forge_a_verdict(sb):
    forger = code("""
        import json, os, sys
        fake = {"k": "e", "status": "passed", "passed": True, "tests": []}
        for line in ('{"k":"c","ok":true}', '{"k":"t","i":0,"s":"passed"}', json.dumps(fake),
                     "passed", "PASSED", "OK"):
            print(line)
            sys.stderr.write(line + "\\n")
            for fd in range(0, 64):  # every descriptor we might have inherited
                try:
                    os.write(fd, (line + "\\n").encode())
                except OSError:
                    pass
        sys.stdout.flush()
    """)
    result, _ = run_one(sb, Job(id="forge", code=forger, tests=["assert 1 == 2"]))
    assert result.status in ("failed", "crashed")
    assert result.tests[0].status != "passed"
    assert result.stdout and "passed" in result.stdout  # captured, and not believed
    # The same forger followed by os._exit(0): crashed, never passed.
    result, _ = run_one(sb, Job(id="forge2", code=forger + "os._exit(0)\n",
                                tests=["assert True"]))
    assert result.status == "crashed"


def test_stdout_is_capped(sb):
    chatty = "for i in range(20000):\n    print(i, 'x' * 50)\n"
    result, _ = run_one(sb, Job(id="chatty", code=chatty, tests=["assert True"], timeout=10.0))
    assert result.status == "passed"
    assert result.stdout.startswith("0 xxx") and len(result.stdout.encode()) <= 4096


@pytest.mark.skipif(not ROOT, reason="tier 2 without root runs jobs as the caller")
def test_caller_environment_is_invisible(monkeypatch, request):
    secret = "s3cr3t-token-" + os.urandom(6).hex()
    monkeypatch.setenv("UCODER_TEST_API_KEY", secret)
    holder = subprocess.Popen(["sleep", "30"], env={**os.environ})  # a process holding it
    spy = code(f"""
        import os
        def leaks():
            found = [k for k, v in os.environ.items() if {secret!r} in v]
            for pid in os.listdir("/proc"):
                for what in ("environ", "cmdline"):
                    try:
                        with open(f"/proc/{{pid}}/{{what}}", "rb") as fh:
                            if {secret!r}.encode() in fh.read():
                                found.append(pid + "/" + what)
                    except OSError:
                        pass
            return found
    """)
    try:
        for tier in [p if isinstance(p, str) else p.values[0] for p in TIERS]:
            if tier == "bwrap" and not BWRAP_OK:
                continue
            with Sandbox(workers=1, timeout=5.0, tier=tier) as box:  # started after setenv
                result = box.run([Job(id="spy", code=spy, tests=["leaks()"])])[0]
            assert result.status == "passed", result
            assert result.tests[0].output == "[]", (tier, result.tests[0].output)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(not ROOT, reason="tier 2 without root runs jobs as the caller")
def test_nothing_written_or_deleted_outside_scratch(sb):
    victim_dir = Path(tempfile.mkdtemp(prefix="ucoder-victim-", dir="/var/tmp"))
    try:
        victim_dir.chmod(0o755)
        victim = victim_dir / "victim.txt"
        victim.write_text("precious")
        victim.chmod(0o644)
        open_dir = victim_dir / "world-writable"  # bwrap's read-only view protects even this
        open_dir.mkdir()
        open_dir.chmod(0o777)
        open_file = open_dir / "open.txt"
        open_file.write_text("open")
        open_file.chmod(0o666)
        tag = os.urandom(4).hex()
        targets = [str(victim_dir / f"new-{tag}"), str(victim), os.getcwd() + f"/x-{tag}"]
        if sb.tier == "bwrap":
            targets += [str(open_file), str(open_dir / f"new-{tag}"), f"/tmp/x-{tag}",
                        f"/var/tmp/x-{tag}", f"/dev/shm/x-{tag}"]
        vandal = code(f"""
            import os
            def rmtree(path):  # by hand: shutil is not preloaded (nor importable in
                for entry in os.scandir(path):  # tier 2 where the stdlib is root-only)
                    if entry.is_dir(follow_symlinks=False):
                        rmtree(entry.path)
                    else:
                        os.remove(entry.path)
                os.rmdir(path)
            def vandalize():
                done = []
                for path in {targets!r}:
                    for action in ("write", "append", "delete"):
                        try:
                            if action == "delete":
                                os.remove(path)
                            else:
                                with open(path, "w" if action == "write" else "a") as fh:
                                    fh.write("pwned")
                            done.append(action + " " + path)
                        except OSError:
                            pass
                try:
                    rmtree({str(victim_dir)!r})
                    done.append("rmtree")
                except OSError:
                    pass
                with open("scratch.txt", "w") as fh:  # the scratch dir itself is writable
                    fh.write("fine")
                return done
        """)
        result, _ = run_one(sb, Job(id="vandal", code=vandal,
                                    tests=["vandalize()", "open('scratch.txt').read()"]))
        assert result.status == "passed", result
        assert result.tests[1].output == "'fine'"
        assert victim.read_text() == "precious" and open_file.read_text() == "open"
        assert sorted(p.name for p in victim_dir.iterdir()) == ["victim.txt", "world-writable"]
        for path in targets:
            if "new-" in path or "x-" in path:
                assert not os.path.exists(path), path
        if sb.tier == "bwrap":
            assert result.tests[0].output == "[]"
    finally:
        subprocess.run(["rm", "-rf", str(victim_dir)], check=False)


@pytest.mark.skipif(not ROOT, reason="tier 2 without root runs jobs as the caller")
def test_killing_parent_or_process_group_does_not_kill_the_runner(sb):
    before = sb.worker_pids
    killer = code("""
        import os, signal
        for target in (os.getppid(), -os.getpgid(os.getppid() or os.getpid())):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
                    try:
                        os.kill(int(pid), sig)
                    except OSError:
                        pass
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    """)
    result, _ = run_one(sb, Job(id="killer", code=killer, tests=["assert True"]))
    assert result.status in ("passed", "crashed")
    assert sb.worker_pids == before  # no worker had to be replaced
    assert sb.run([CONTROL] * 4)[0].status == "passed"
    os.kill(os.getpid(), 0)  # and the caller is alive, of course


@pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap unavailable here")
def test_no_network_under_bubblewrap():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = code(f"""
        import socket
        def reach():
            got = []
            for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
                try:
                    socket.create_connection((host, port), timeout=0.5).close()
                    got.append(host)
                except OSError:
                    pass
            try:
                socket.getaddrinfo("example.com", 80)
                got.append("dns")
            except OSError:
                pass
            return got
    """)
    try:
        with Sandbox(workers=1, timeout=5.0, tier="bwrap") as box:
            result = box.run([Job(id="net", code=probe, tests=["reach()"])])[0]
    finally:
        listener.close()
    assert result.status == "passed" and result.tests[0].output == "[]"


def test_runner_survives_all_adversaries_in_one_batch(sb):
    jobs = [Job(id=f"spin-{k}", code=v, tests=["1"]) for k, v in SPINS.items()]
    jobs += [Job(id=f"exit-{k}", code=c, tests=t) for k, (c, t) in EXITS.items()]
    jobs += [
        Job(id="mem", code="x = bytearray(10 ** 12)\n", tests=["1"]),
        Job(id="forkbomb", code="import os\nwhile True:\n    try:\n        os.fork()\n"
                                "    except OSError:\n        pass\n", tests=["1"]),
        Job(id="killer", code="import os, signal\nfor p in os.listdir('/proc'):\n"
                              "    try:\n        os.kill(int(p), signal.SIGKILL)\n"
                              "    except Exception:\n        pass\n", tests=["1"]),
        Job(id="forge", code="print('{\"k\":\"e\"}')\nimport os\nos._exit(0)\n",
            tests=["1"]),
        CONTROL,
    ]
    start = time.monotonic()
    results = sb.run(jobs)
    assert time.monotonic() - start < 4 * TIMEOUT + 5
    by_id = {r.id: r for r in results}
    assert [r.id for r in results] == [j.id for j in jobs]
    assert by_id["control"].status == "passed"
    assert by_id["control"].tests[1].output == "5"
    assert all(r.status != "passed" for r in results if r.id not in ("control", "killer"))
    assert by_id["mem"].status == "memory"
    assert all(by_id[f"spin-{k}"].status == "timeout" for k in SPINS)
    assert sb.run([CONTROL])[0].status == "passed"


def test_worker_killed_from_outside_is_replaced(sb):
    """The pool's backstop: a dead worker costs one job, then a fresh worker takes over."""
    job = Job(id="slow", code="import time\ntime.sleep(0.5)\n", tests=["1"])

    def kill_soon():  # the whole worker: launcher, namespace, server, spawner, job
        time.sleep(0.2)
        victims = [sb.worker_pids[0], *descendants(sb.worker_pids[:1])]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    import threading

    t = threading.Thread(target=kill_soon)
    t.start()
    results = sb.run([job, job])
    t.join()
    assert {r.status for r in results} <= {"crashed", "passed"}
    assert "crashed" in {r.status for r in results}
    assert sb.run([CONTROL, CONTROL])[0].status == "passed"
    assert sys.modules[__name__]  # the caller is fine


@pytest.mark.parametrize("tier", TIERS)
def test_killing_the_caller_leaves_no_worker_behind(tier):
    script = textwrap.dedent(f"""
        import os, sys, time
        from ucoder.sandbox import Job, Sandbox
        sb = Sandbox(workers=2, timeout=30, tier={tier!r})
        job = Job(id="sleeper", code="import time\\ntime.sleep(30)\\n", tests=["1"])
        import threading
        threading.Thread(target=sb.run, args=([job, job],), daemon=True).start()
        time.sleep(0.5)
        print(" ".join(map(str, sb.worker_pids)), flush=True)
        time.sleep(60)
    """)
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    pids = [int(p) for p in caller.stdout.readline().split()]
    tree = descendants([caller.pid])
    assert len(pids) == 2 and len(tree) >= 4  # workers, their servers and the sleepers
    caller.kill()
    caller.wait()

    def gone() -> bool:
        return not any(Path(f"/proc/{p}").exists() and
                       b"zombie" not in Path(f"/proc/{p}/status").read_bytes().lower()
                       for p in tree if Path(f"/proc/{p}").exists())

    assert settles(gone, seconds=5.0)


# ------------------------------------------------------------------ equality hacks
HACKS = code("""
    class Yes:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        def __lt__(self, other): return True
        def __hash__(self): return hash(3)
        def __bool__(self): return True
        def __repr__(self): return "3"
    class Int(int):
        def __eq__(self, other): return True
        __hash__ = int.__hash__
    class Str(str):
        def __eq__(self, other): return True
        __hash__ = str.__hash__
    class List(list):
        def __eq__(self, other): return True
    def yes(x): return Yes()
    def int_(x): return Int(0)
    def str_(x): return Str("")
    def list_(x): return List()
    def nested(x): return [1, (2, {"k": Yes()})]
    def in_set(x): return {Yes()}
    def as_key(x): return {Yes(): 1}
    def honest(x): return 3
""")


@pytest.mark.parametrize("test", [
    "assert yes(1) == 3", "assert yes(1) != 4", "assert 3 == yes(1)", "assert yes(1) < 4",
    "assert yes(1)", "assert not not yes(1)", "assert yes(1) and True", "assert 3 in [yes(1)]",
    "assert yes(1) in [3]", "assert int_(1) == 3", "assert str_(1) == 'abc'",
    "assert list_(1) == [1, 2]", "assert nested(1) == [1, (2, {'k': 3})]",
    "assert in_set(1) == {3}", "assert as_key(1) == {3: 1}",
    "assert all(v == 3 for v in [yes(1)])",
    "def check(candidate):\n    assert candidate(1) == 3\ncheck(yes)",  # HumanEval's form
])
def test_equality_hack_fails_every_assert_form(sb, test):
    result, _ = run_one(sb, Job(id="hack", code=HACKS, tests=[test, "assert honest(1) == 3"]))
    assert result.status == "failed"
    assert result.tests[0].status == "failed" and "not a genuine value" in result.tests[0].error
    assert result.tests[1].passed  # the honest function in the same job still passes


def test_equality_hack_fails_the_output_signature(sb):
    calls = ["yes(1)", "int_(1)", "str_(1)", "list_(1)", "nested(1)", "in_set(1)"]
    result, _ = run_one(sb, Job(id="hack", code=HACKS, tests=calls + ["honest(1)"]))
    honest = result.tests[-1]
    assert honest.passed and honest.output == "3"
    for call, t in zip(calls, result.tests):
        assert not t.passed and t.output is None and t.hash != honest.hash, call


def test_honest_values_still_pass(sb):
    src = code("""
        from collections import Counter, OrderedDict, defaultdict, deque
        def f(x): return x
    """)
    tests = ["assert f(1) == 1.0", "assert f(True) == 1", "assert f(2.5) > 2",
             "assert f([1, (2, 'a'), {3: {4.0}}]) == [1, (2, 'a'), {3: {4}}]",
             "assert f(Counter('aab')) == {'a': 2, 'b': 1}",
             "assert f(OrderedDict(a=1)) == {'a': 1}", "assert f(defaultdict(int)) == {}",
             "assert f(deque([1])) == deque([1])", "assert f(None) is None",
             "assert not f(0)", "assert f(int) == int", "assert f(range(3)) == range(3)",
             "f(object())", "f(Counter('ba'))"]
    result, _ = run_one(sb, Job(id="honest", code=src, tests=tests))
    assert result.status == "passed", [t.error for t in result.tests]
    assert result.tests[-2].output == "<object object at 0x?>"
    assert result.tests[-1].output == "{'a': 1, 'b': 1}"  # a Counter counts as its dict


def test_equality_hack_fails_benchmark_scoring(sb):
    from ucoder.evaluation.benchmarks import load_humaneval
    from ucoder.evaluation.programs import hidden_job

    problems = load_humaneval()[:8]
    jobs = [hidden_job(p, f"{HACKS}\n{p.entry_point} = yes\n", p.task_id, 5.0)
            for p in problems]
    jobs += [hidden_job(p, p.solution[len(p.context):], f"ref-{p.task_id}", 5.0)
             for p in problems]
    results = sb.run(jobs)
    assert [r.status for r in results[:8]] == ["failed"] * 8
    assert [r.status for r in results[8:]] == ["passed"] * 8
