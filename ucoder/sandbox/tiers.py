"""Isolation tiers: probe bubblewrap once, build the command line that starts a worker.

``bwrap`` (tier 1): the worker lives in bubblewrap with no network, a read-only view
of the host, a private /tmp, its own pid/ipc/uts namespaces, home directories hidden,
and ends with the process that started it. As root, bwrap runs *without* a user
namespace (inside one, bwrap's ``--uid 65534`` would still be the host's root for file
access) and keeps only the capabilities the server needs; every job then drops to the
real uid 65534 in a pid namespace of its own. ``rlimit`` (tier 2): a plain subprocess with rlimits,
a scrubbed environment, a temp working dir and, as root, a uid per worker.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("ucoder.sandbox")

TIERS = ("bwrap", "rlimit")
NOBODY = 65534
# Tier 2 as root gives each worker a uid of its own (kill(-1) and RLIMIT_NPROC then reach
# exactly one worker's jobs); the range is far from real accounts and container subuids.
TIER2_UID_BASE = 1_900_000_000
WORKER_SCRIPT = str(Path(__file__).with_name("server.py"))
# What model-written solutions import most, loaded once in the server so jobs find them
# ready. Heavier, rarer modules (dataclasses, datetime, decimal, fractions, statistics,
# hashlib with OpenSSL, tempfile with shutil's compression libraries, textwrap,
# unicodedata) are left out: every page and every mapped library here is copied into
# every job's page tables (benchmarks/sandbox_results.md), and a job that
# needs one imports it itself.
PRELOAD = [
    "array", "bisect", "collections", "copy", "enum", "functools", "heapq", "itertools",
    "json", "math", "operator", "random", "re", "string", "typing",
]
_CAPS = ["CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_KILL", "CAP_CHOWN",
         "CAP_DAC_OVERRIDE", "CAP_FOWNER"]
MISSING_IN_RLIMIT = [
    "network access", "a read-only host file system (world-writable dirs like /tmp stay "
    "writable)", "a private pid namespace (jobs see the host's processes)",
    "hidden home directories",
]
MISSING_IN_RLIMIT_NONROOT = [
    "a separate user (jobs run as you: your files, your processes and /proc/<pid>/environ "
    "of your processes are reachable)",
]


def is_root() -> bool:
    return os.geteuid() == 0


def worker_env() -> dict[str, str]:
    """The whole environment a worker sees: nothing of the caller's (tokens, keys)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        # Resolve symbols once in the server, not again (a page copy) in every job.
        "LD_BIND_NOW": "1",
    }


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hide_args() -> list[str]:
    """tmpfs over /tmp and home directories, re-binding read-only what Python needs.

    /tmp is in the list so a project or virtualenv that lives under /tmp (a CI checkout)
    stays visible, read-only, inside the worker's private /tmp.
    """
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    needed.add(os.path.dirname(WORKER_SCRIPT))
    # Only what workers read, bound as narrowly as possible: a wide ancestor (a checkout
    # on sys.path) would bring its own mode, and a 0700 one (mktemp -d) would lock the
    # job's uid out of site-packages. Parents are then made 0755 inside the tmpfs.
    needed |= {os.path.realpath(p) for p in site_dirs()}
    hidden = sorted({os.path.realpath(p) for p in ("/tmp", "/root", "/home",
                                                   os.path.expanduser("~"))
                     if os.path.isdir(p)} | {"/tmp"})
    hidden = [h for h in hidden if not any(_inside(h, o) and h != o for o in hidden)]
    args: list[str] = []
    for h in hidden:
        keep = sorted(n for n in needed if _inside(n, h))
        keep = [k for k in keep if not any(_inside(k, o) and k != o for o in keep)]
        if h in keep:
            continue  # Python lives right there; hiding it would hide the interpreter
        args += ["--perms", "0755", "--tmpfs", h]
        made: set[str] = set()
        for k in keep:
            # bwrap would create the missing parents 0700: the job's uid could not pass.
            parts = k[len(h):].strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = h.rstrip("/") + "/" + "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    args += ["--perms", "0755", "--dir", d]
            args += ["--ro-bind", k, k]
    return args


def bwrap_prefix() -> list[str]:
    """The bubblewrap part of a worker's command line (see the module docstring)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    if is_root():
        ns = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
              "--unshare-cgroup-try", "--cap-drop", "ALL"]
        for cap in _CAPS:
            ns += ["--cap-add", cap]
    else:
        ns = ["--unshare-all"]  # with a user namespace: the only way in for non-root
    env = []
    for key, value in worker_env().items():
        env += ["--setenv", key, value]
    # No --die-with-parent: it fires when the *thread* that started bwrap ends. The
    # server inside exits when its job pipe hangs up, and bwrap follows its child.
    return [bwrap, *ns, "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            *_hide_args(), "--clearenv", *env, "--chdir", "/tmp"]


@functools.lru_cache(maxsize=1)
def probe_bwrap() -> str | None:
    """Try bubblewrap once with a worker's exact options; ``None`` when it works.

    It runs ``true`` rather than Python (a fifth of the time): what can fail here is
    bwrap creating the namespaces and mounts, which this exercises in full.
    """
    if not shutil.which("bwrap"):
        return "bwrap is not installed (apt-get install bubblewrap)"
    true = shutil.which("true") or "/bin/true"
    try:
        proc = subprocess.run([*bwrap_prefix(), true], capture_output=True, text=True,
                              timeout=30, env=worker_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap failed to start: {err}"
    if proc.returncode != 0:
        return f"bwrap does not work here: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


def choose_tier(requested: str = "auto") -> str:
    """``auto`` picks ``bwrap`` when it works here, else ``rlimit``; explicit names are
    checked (asking for ``bwrap`` where it does not work raises)."""
    if requested not in ("auto", *TIERS):
        raise ValueError(f"tier={requested!r} is not allowed; use one of auto, bwrap, rlimit")
    if requested == "rlimit":
        return "rlimit"
    reason = probe_bwrap()
    if reason is None:
        return "bwrap"
    if requested == "bwrap":
        raise RuntimeError(f"tier='bwrap' was requested but {reason}")
    return "rlimit"


def _reachable_by_others(path: str) -> bool:
    """Whether a user with no special rights can enter every directory down to path."""
    path = os.path.realpath(path)
    parts = path.strip("/").split("/")
    for i in range(len(parts) + 1):
        try:
            mode = os.stat("/" + "/".join(parts[:i])).st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


def missing_protections(tier: str) -> list[str]:
    """What the tier lacks here, for the start-up warning (empty: nothing to warn)."""
    if tier == "bwrap":
        return [] if is_root() else [
            "a separate uid per job (jobs share the worker's uid and can kill its server)"]
    missing = MISSING_IN_RLIMIT + ([] if is_root() else MISSING_IN_RLIMIT_NONROOT)
    stdlib = os.path.dirname(os.__file__)
    if is_root() and not _reachable_by_others(stdlib):
        missing.append(f"imports beyond the preloaded modules ({stdlib} is not readable by "
                       "the job's uid)")
    return missing


def _user_process_count() -> int:
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return count


def worker_config(tier: str, index: int, scratch_root: str, cpu: int | None = None) -> dict:
    """What one fork server needs to know (sent as its argv[1]); ``cpu``: the CPU the
    worker, its spawner and its jobs stay on (None: the scheduler decides)."""
    root = is_root()
    if tier == "bwrap":
        sweep, uid = ("pidns", NOBODY) if root else ("kill_all", None)
    else:
        sweep, uid = ("uid", TIER2_UID_BASE + index) if root else ("children", None)
    # RLIMIT_NPROC counts every process of the uid: for a shared uid, add what exists.
    nproc = 64 if uid is not None else _user_process_count() + 64
    return {"sweep": sweep, "uid": uid, "scratch_root": scratch_root, "nproc": nproc,
            "own_scratch_root": tier != "bwrap",  # bwrap's /tmp vanishes with the worker
            "fsize_mb": 16, "nofile": 256, "preload": PRELOAD, "site_dirs": site_dirs(),
            "cpu": cpu}


def site_dirs() -> list[str]:
    """This interpreter's site-packages, for workers started with ``-S``.

    ``-S`` skips ``site`` and its .pth files (here an editable-install finder that pulls
    in pathlib and importlib.util): 50 ms less per worker start and less memory for
    every job to copy. Jobs still import installed packages from these directories.
    """
    import site

    dirs = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [d for d in dirs if os.path.isdir(d)]


def worker_command(tier: str, cfg_json: str) -> list[str]:
    python = [sys.executable, "-S", "-B", WORKER_SCRIPT, cfg_json]
    return [*bwrap_prefix(), *python] if tier == "bwrap" else python
