"""JSON Lines I/O shared by every stage: atomic writes and line-numbered reads.

Stage files are written to a temporary file in the same directory and renamed into
place, so a killed process leaves either the old file or the complete new one, never
half a file. Readers report the line number of every malformed line.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any


class JsonlError(ValueError):
    """A line of a JSONL file is not a JSON object; names the file and the line."""

    def __init__(self, path: str | os.PathLike, lineno: int, reason: str):
        self.path, self.lineno, self.reason = str(path), lineno, reason
        super().__init__(f"{path}:{lineno}: {reason}")


def _to_plain(row: Any) -> Any:
    return asdict(row) if is_dataclass(row) and not isinstance(row, type) else row


def dumps(row: Any) -> str:
    """One JSON line (dataclasses are converted with ``asdict``)."""
    return json.dumps(_to_plain(row), ensure_ascii=False, separators=(",", ":"))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same dir, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write rows (dicts or dataclasses) as JSONL, atomically."""
    return atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write one JSON document, indented for people, atomically."""
    return atomic_write_text(path, json.dumps(_to_plain(obj), indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """One JSON document, or ``default`` when the file does not exist.

    Raises:
        JsonlError: the file exists but is not valid JSON (every writer here writes
            atomically, so such a file was damaged or written by something else); the
            message names the file, so a check that reads it is never skipped silently.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise JsonlError(path, err.lineno, f"not valid JSON ({err.msg}); restore or delete "
                         "the file") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict | JsonlError]]:
    """Yield ``(line_number, object_or_error)`` for every non-blank line.

    Malformed lines come back as :class:`JsonlError` values instead of raising, so a
    caller can record them and go on with the rest of the file.
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield lineno, JsonlError(path, lineno, f"not valid JSON ({err.msg})")
                continue
            if not isinstance(obj, dict):
                yield lineno, JsonlError(path, lineno, "expected a JSON object")
                continue
            yield lineno, obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read every line of a JSONL file; raise :class:`JsonlError` on the first bad one."""
    rows = []
    for _, obj in iter_jsonl(path):
        if isinstance(obj, JsonlError):
            raise obj
        rows.append(obj)
    return rows
