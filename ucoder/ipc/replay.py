"""Record a generation backend's calls and replay them, so a round can be rerun without
the model: the same raw outputs go through the current round code.

:class:`RecordingBackend` wraps a real backend and appends one JSONL line per
``sample()`` (and ``score()``) call: the prompts, ``n``, the settings and every answer.
:class:`ReplayBackend` serves those answers back in call order. A call whose method,
number of prompts or ``n`` differs from the recording raises :class:`ReplayMismatch`
(the round code now samples differently: re-record). Prompts that differ in text only
are served and counted in ``prompt_mismatches`` (a changed prompt wording).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ucoder.generation import Sample

_SAMPLE_FIELDS = ("text", "sum_logprob", "mean_logprob", "num_tokens", "finish_reason")


class ReplayMismatch(RuntimeError):
    """The replayed code asked for a call the recording does not hold."""


def _jsonable(kwargs: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()
            if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


class RecordingBackend:
    """A backend that records every ``sample``/``score`` call of ``backend`` to ``path``.

    Args:
        backend: the real backend (e.g. :class:`ucoder.generation.Sampler`).
        path: the JSONL file; created (truncated) on construction.

    Any other attribute (``format_prompt``, ...) is the wrapped backend's.
    """

    def __init__(self, backend, path: str | Path):
        self.backend = backend
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def _write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.calls += 1

    def sample(self, prompts: Sequence[str], n: int = 1, **kwargs) -> list[list[Sample]]:
        groups = self.backend.sample(prompts, n, **kwargs)
        self._write({"method": "sample", "n": n, "prompts": list(prompts),
                     "kwargs": _jsonable(kwargs),
                     "prompt_texts": [g[0].prompt_text if g else "" for g in groups],
                     "samples": [[{k: getattr(s, k) for k in _SAMPLE_FIELDS} for s in g]
                                 for g in groups]})
        return groups

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], *,
              prefix: str = "") -> list[list[float]]:
        scores = self.backend.score(prompts, continuations, prefix=prefix)
        self._write({"method": "score", "n": [len(c) for c in continuations],
                     "prompts": list(prompts), "continuations": [list(c) for c in continuations],
                     "kwargs": {"prefix": prefix}, "scores": scores})
        return scores


class ReplayBackend:
    """Serves a recording made by :class:`RecordingBackend`, call by call.

    Args:
        path: the recording (JSONL).
        rerecord: the command that re-records it, named in mismatch errors.
    """

    def __init__(self, path: str | Path, *, rerecord: str = "re-record it"):
        self.path = Path(path)
        with self.path.open() as f:
            self.calls = [json.loads(line) for line in f if line.strip()]
        self.rerecord = rerecord
        self.position = 0
        self.prompt_mismatches = 0

    @property
    def remaining(self) -> int:
        """Recorded calls not served yet."""
        return len(self.calls) - self.position

    def _next(self, method: str, prompts: Sequence[str], n) -> dict:
        asked = f"{method}() with {len(prompts)} prompts, n={n}"
        if self.position >= len(self.calls):
            raise ReplayMismatch(f"{self.path}: call {self.position} is {asked}, but the "
                                 f"recording holds only {len(self.calls)} calls; the round "
                                 f"code samples differently now: {self.rerecord}")
        rec = self.calls[self.position]
        if rec["method"] != method or len(rec["prompts"]) != len(prompts) or rec["n"] != n:
            raise ReplayMismatch(
                f"{self.path}: call {self.position} is {asked}, but the recording has "
                f"{rec['method']}() with {len(rec['prompts'])} prompts, n={rec['n']}; the "
                f"round code samples differently now: {self.rerecord}")
        self.prompt_mismatches += sum(a != b for a, b in zip(rec["prompts"], prompts))
        self.position += 1
        return rec

    def sample(self, prompts: Sequence[str], n: int = 1, **kwargs) -> list[list[Sample]]:
        rec = self._next("sample", prompts, n)
        return [[Sample(token_ids=[], prompt_index=i, sample_index=k, prompt_text=text,
                        **{f: s[f] for f in _SAMPLE_FIELDS}) for k, s in enumerate(group)]
                for i, (group, text) in enumerate(zip(rec["samples"], rec["prompt_texts"]))]

    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], *,
              prefix: str = "") -> list[list[float]]:
        rec = self._next("score", prompts, [len(c) for c in continuations])
        return [list(s) for s in rec["scores"]]
