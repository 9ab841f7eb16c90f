"""Replayed rounds give clean pairs.

``tests/fixtures/round_embedded*.jsonl`` hold every generation call of one round of the
embedded model (``ucoder round`` defaults: 12 problems, 8 samples, 8 tests; seeds 0 and 1)
and its raw answers, recorded by ``tests/fixtures/record_round.py``. Replaying it through
the current round code must give pairs that are all clean (:func:`ucoder.ipc.pairs.
check_pairs`: the completion parses, defines its entry point once and holds nothing else
at top level; the docstring is whole and its examples agree with the code when run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_ipc_round import CONFIG, Scripted
from ucoder.ipc.config import RoundConfig
from ucoder.ipc.pairs import check_pairs
from ucoder.ipc.replay import RecordingBackend, ReplayBackend, ReplayMismatch
from ucoder.ipc.round import RoundRunner
from ucoder.jsonl import read_jsonl
from ucoder.sandbox import Sandbox

FIXTURES = Path(__file__).parent / "fixtures"
RERECORD = "re-record: nice .venv/bin/python tests/fixtures/record_round.py"
# Recording -> (round seed, fewest clean pairs its replay must give): one below what the
# replay gave when it was recorded (2 and 4), so a change that loses one pair still
# passes and one that loses more fails.
RECORDINGS = {"round_embedded.jsonl": (0, 1), "round_embedded_seed1.jsonl": (1, 3)}


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, timeout=3.0, memory_mb=256) as sb:
        yield sb


def test_a_recorded_round_replays_to_the_same_files(tmp_path, box):
    recorder = RecordingBackend(Scripted(), tmp_path / "calls.jsonl")
    RoundRunner(recorder, tmp_path / "live", CONFIG, sandbox=box).run()
    replay = ReplayBackend(recorder.path)
    RoundRunner(replay, tmp_path / "replayed", CONFIG, sandbox=box).run()
    assert replay.remaining == 0 and replay.prompt_mismatches == 0 and recorder.calls >= 5
    for name in ("selected", "consensus", "candidates", "tests"):
        assert read_jsonl(tmp_path / "replayed" / f"{name}.jsonl") == \
            read_jsonl(tmp_path / "live" / f"{name}.jsonl")


def test_a_changed_sampling_call_is_a_clear_error(tmp_path, box):
    recorder = RecordingBackend(Scripted(), tmp_path / "calls.jsonl")
    RoundRunner(recorder, tmp_path / "live", CONFIG, sandbox=box).run()
    other = RoundConfig(**{**CONFIG.to_dict(), "samples": 4, "selection": CONFIG.selection})
    with pytest.raises(ReplayMismatch, match=r"n=4, but the recording has .* n=8.*re-record"):
        RoundRunner(ReplayBackend(recorder.path, rerecord=RERECORD), tmp_path / "again",
                    other, sandbox=box).run()


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_the_recorded_embedded_round_gives_clean_pairs(name, tmp_path, box):
    seed, min_pairs = RECORDINGS[name]
    replay = ReplayBackend(FIXTURES / name, rerecord=RERECORD)
    stats = RoundRunner(replay, tmp_path, RoundConfig(), sandbox=box, seed=seed).run()
    assert replay.remaining == 0, f"{replay.remaining} recorded calls were never asked for"
    selected = read_jsonl(tmp_path / "selected.jsonl")
    assert stats["selected"] == len(selected) >= min_pairs
    reasons = check_pairs(selected, box)
    assert reasons == [None] * len(selected), [
        (r["problem_id"], why) for r, why in zip(selected, reasons) if why]
    # Whatever the round lost after selection is accounted for, with a reason.
    assert all(d["reason"] for d in read_jsonl(tmp_path / "selected.dropped.jsonl"))
