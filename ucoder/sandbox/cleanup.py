"""Finding and removing what a job left behind (stdlib only; runs in the worker)."""

from __future__ import annotations

import errno
import os


def pids(ppid: int | None) -> list[int]:
    """Pids visible in /proc (only the children of ``ppid`` when given)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        if ppid is None:
            pids.append(int(name))
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2:].split()[1]) == ppid:
            pids.append(int(name))
    return pids


def remove(path: str) -> None:
    try:
        os.rmdir(path)  # the common case: the job left its scratch dir empty
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            os.unlink(path)
            return
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise

        # Imported here: shutil pulls in zlib, bz2 and lzma, and every mapped library
        # in the worker is copied into each job's page tables.
        import shutil

        def unlock(func, p, _exc):  # a candidate may have chmod-ed its files to 000
            os.chmod(os.path.dirname(p), 0o700)
            func(p)

        shutil.rmtree(path, onerror=unlock)
