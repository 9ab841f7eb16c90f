"""The spawner: the process every job is cloned from (stdlib only; runs in the worker).

It holds the pre-imported modules and does nothing but clone, so each job starts
from a warm interpreter at the price of one cheap fork.
"""

from __future__ import annotations

import ctypes
import os

SYS_CLONE = 56  # x86_64
CLONE_PARENT, CLONE_NEWPID = 0x00008000, 0x20000000


def spawner(cmd_r: int, reply_w: int, flags: int, child) -> None:
    """Clone one child per byte read; reply with its pid (negative errno on failure).

    ``PyDLL`` keeps the GIL across the syscall. ``os.fork`` would also run
    ``PyOS_BeforeFork``/``PyOS_AfterFork_Child``, which re-initialise locks other threads
    might hold, run at-fork hooks and reset signal state: the spawner has no other
    thread, holds no lock between clones, has no pending signal and no hooks (see
    :func:`preload`), and skipping them spares every job ~90 page copies, a fifth of all.
    """
    import gc

    raw = ctypes.PyDLL(None, use_errno=True)
    read, write, clone = os.read, os.write, raw.syscall
    gc.collect()
    gc.freeze()  # children's collections then skip everything that exists now
    ctypes.CDLL(None).malloc_trim(0)  # fewer mapped pages: every clone copies their PTEs
    while read(cmd_r, 1):
        pid = clone(SYS_CLONE, flags, 0, 0, 0, 0)
        if pid == 0:
            try:
                child()
            finally:
                os._exit(70)
        write(reply_w, (pid if pid > 0 else -ctypes.get_errno()).to_bytes(8, "little",
                                                                          signed=True))
    os._exit(0)


def preload(names: list[str]) -> None:
    import importlib

    # random registers a hook that re-seeds it in every forked child: wasted work per
    # job, and it would make candidates using random behave differently on every run.
    # The spawner seeds it once instead (harness.prepare_spawner).
    register, os.register_at_fork = os.register_at_fork, lambda **kw: None
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                pass  # a module missing here is simply not preloaded
    finally:
        os.register_at_fork = register
