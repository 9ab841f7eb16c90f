"""Atomic directory writes: a directory appears complete or not at all.

A model cache, an adapter or an export is written into a temporary directory beside the
target and renamed into place, so a killed process leaves the old directory or the
complete new one, never half of one (readers check for ``config.json`` and the like).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` when the block succeeds.

    The temporary directory lives in ``target``'s parent (same file system, so the
    rename is atomic). On an exception it is removed and ``target`` is left untouched.

    Example:
        >>> with atomic_directory("out/adapter") as tmp:  # doctest: +SKIP
        ...     model.save_pretrained(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
