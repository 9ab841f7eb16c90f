"""One IPC round, resumable: problems -> ratings -> skeletons -> tests -> candidates ->
executions -> selection, each stage one JSONL file in ``out_dir``.

Files (all written atomically with :func:`ucoder.jsonl.write_jsonl`):

* ``problems.jsonl``, ``rated.jsonl``, ``skeletons.jsonl`` — the problems that survived
  each stage (:class:`ucoder.records.Problem` rows); ``ratings.jsonl`` — every rated
  problem's score distribution and would-drop verdict;
* ``tests.jsonl`` — ``{"problem_id", "generated", "tests"}`` (``tests`` is what runs);
* ``candidates.jsonl`` — candidates normalised to the entry point and what it uses
  (:mod:`ucoder.ipc.normalize`); ``executions.jsonl`` — their per-test verdicts and
  behaviour hashes;
* ``consensus.jsonl`` — one row per executed candidate with its consensus label, and
  ``selected.jsonl`` — the SFT pairs ``{"prompt", "completion", "problem_id", "scores"}``
  whose docstring examples agree with the completion run in the sandbox
  (``scores["examples"]`` counts them); ``rewrites.jsonl`` — each prompt whose examples
  were rewritten, ``{"problem_id", "before", "after", "agreed", "rewritten", "removed",
  "added"}`` (:mod:`ucoder.ipc.agreement`);
* ``<stage>.dropped.jsonl`` — every item the stage dropped, with its reason (written
  before the stage file); ``timings.json``; ``round.json`` (the config); ``stats.json``.

A stage runs when its file is missing; so does every stage after it. A finished round
reads its files, rewrites ``stats.json`` and returns without loading anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from ucoder.ipc import stages
from ucoder.ipc.config import RoundConfig
from ucoder.ipc.stats import round_stats
from ucoder.jsonl import read_json, read_jsonl, write_json, write_jsonl
from ucoder.records import Dropped

log = logging.getLogger("ucoder.round")

STAGES = ("problems", "rated", "skeletons", "tests", "candidates", "executions", "selected")


class RoundRunner:
    """Run (or resume) one round in ``out_dir``.

    Args:
        sampler: a :class:`ucoder.generation.GenerationBackend` (e.g. ``Sampler``).
        out_dir: where the stage files go.
        config: the round's settings.
        sandbox: a running :class:`ucoder.sandbox.Sandbox`; None opens one when the
            executions stage runs and closes it after.
        extra_score: ``(prompt_texts, raw_texts) -> scores`` for the executed candidates
            (e.g. a probe's probability): the exact text each was sampled after and the
            text sampled; fills ``Candidate.extra_score``.
        seed: seeds every sampling stage (each stage its own offset).
        avoid_problems: earlier rounds' problems as text (descriptions, skeletons or
            prompts); new problems that repeat one are dropped as near duplicates.
    """

    def __init__(self, sampler, out_dir, config: RoundConfig | None = None, *, sandbox=None,
                 extra_score: Callable[[list[str], list[str]], list[float]] | None = None,
                 seed: int = 0, avoid_problems: list[str] | None = None):
        self.sampler = sampler
        self.out = Path(out_dir)
        self.config = config if config is not None else RoundConfig()
        self.sandbox = sandbox
        self.extra_score = extra_score
        self.seed = seed
        self.avoid_problems = list(avoid_problems or [])
        self.ran: list[str] = []  # stages this call ran (the others were read from files)

    def path(self, stage: str) -> Path:
        return self.out / f"{stage}.jsonl"

    def run(self) -> dict:
        """Run the missing stages; return the stats (also written to ``stats.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config()
        timings_path = self.out / "timings.json"
        timings = read_json(timings_path) or {}
        first = next((s for s in STAGES if not self.path(s).exists()), None)
        redo = STAGES[STAGES.index(first):] if first else ()
        data: dict = {}
        for stage in STAGES:
            if stage not in redo:
                data[stage] = read_jsonl(self.path(stage))
                continue
            log.info("round %s: stage %s", self.out, stage)
            start = time.perf_counter()
            kept, dropped = self._run_stage(stage, data)
            write_jsonl(self.out / f"{stage}.dropped.jsonl", (d.to_row() for d in dropped))
            write_jsonl(self.path(stage), kept)
            data[stage] = kept
            timings[stage] = round(time.perf_counter() - start, 2)
            write_json(timings_path, timings)
            self.ran.append(stage)
            log.info("round %s: %s kept %d, dropped %d in %.1f s", self.out, stage, len(kept),
                     len(dropped), timings[stage])
        stats = round_stats(self.out, STAGES, timings, data)
        stats["ran"] = list(self.ran)
        if stats["rating"]:  # in filter mode the would-drop group was dropped, not compared
            stats["rating"]["mode"] = self.config.rating_mode
        write_json(self.out / "stats.json", stats)
        return stats

    def _check_config(self) -> None:
        path, current = self.out / "round.json", {"config": self.config.to_dict(),
                                                  "seed": self.seed}
        saved = read_json(path)
        if saved is not None and saved != current and any(self.path(s).exists()
                                                          for s in STAGES):
            raise ValueError(f"out_dir={str(self.out)!r} holds a round made with other "
                             f"settings ({path}); use a new --out directory or delete its "
                             "stage files")
        write_json(path, current)

    def _run_stage(self, stage: str, data: dict) -> tuple[list[dict], list[Dropped]]:
        cfg, seed, sampler = self.config, self.seed, self.sampler
        if stage == "problems":
            return stages.problems(sampler, cfg, seed, self.avoid_problems)
        if stage == "rated":
            return stages.rated(sampler, cfg, data["problems"], self.out / "ratings.jsonl")
        if stage == "skeletons":
            return stages.skeletons(sampler, cfg, data["rated"], seed + 2)
        if stage == "tests":
            return stages.tests(sampler, cfg, data["skeletons"], seed + 3)
        if stage == "candidates":
            return stages.candidates(sampler, cfg, data["skeletons"], data["tests"], seed + 4)
        if stage == "executions":
            return self._executions(data)
        return stages.selected(cfg, data["skeletons"], data["candidates"], data["executions"],
                               self.out / "consensus.jsonl", self.extra_score,
                               test_rows=data["tests"], sandbox=self.sandbox)

    def _executions(self, data: dict) -> tuple[list[dict], list[Dropped]]:
        from ucoder.sandbox import sandbox_or_new

        with sandbox_or_new(self.sandbox, self.config.timeout) as box:
            return stages.executions(box, self.config, data["skeletons"], data["candidates"],
                                     data["tests"])

