"""`ucoder study` end to end on a tiny model: 2 rounds, 2 ablation arms, 5 problems.

The fits, the loop, the sandbox, the re-selection and the statistics are real; only the
text of each IPC stage comes from the scripted round of ``tests/test_loop.py`` (a random
model writes no parsable problems). The study is killed in the middle of an ablation arm
and run again: nothing finished is redone and ``study.json`` comes out complete.
"""

from __future__ import annotations

import json

import pytest

from tests.test_loop import tiny_dir  # noqa: F401 (fixture)
from ucoder.study import Study, StudyConfig

TASKS = [("add", "def add(a, b):\n    return a + b", "assert add(1, 2) == 3"),
         ("neg", "def neg(x):\n    return -x", "assert neg(4) == -4"),
         ("first", "def first(xs):\n    return xs[0]", "assert first([7, 1]) == 7"),
         ("twice", "def twice(s):\n    return s * 2", "assert twice('a') == 'aa'"),
         ("size", "def size(xs):\n    return len(xs)", "assert size([1, 2]) == 2")]


class Killed(RuntimeError):
    pass


class KilledStudy(Study):
    """Dies when the second ablation arm starts to train (after its selection ran)."""

    def _fit_arm(self, arm: str) -> bool:
        if arm == "any_parsable":
            raise Killed(arm)
        return super()._fit_arm(arm)


def benchmark(path) -> str:
    rows = [{"task_id": f"toy/{i}", "text": f"Write {name}.", "code": code, "test_list": [t]}
            for i, (name, code, t) in enumerate(TASKS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def fit_config(model_dir: str) -> dict:
    round_step = {"class_path": "tests.test_loop.ScriptedRound",
                  "init_args": {"round_config": {"problems": 2, "tests": 3, "samples": 4},
                                "batch_size": 4}}
    return {"trainer": {"accelerator": "cpu", "devices": 1, "logger": False,
                        "enable_progress_bar": False, "enable_model_summary": False,
                        "reload_dataloaders_every_n_epochs": 1, "num_sanity_val_steps": 0,
                        "callbacks": [{"class_path": "ucoder.callbacks.SelfTraining",
                                       "init_args": {"round_step": round_step}}]},
            "model": {"model": model_dir, "load_in_4bit": False, "dtype": "float32",
                      "lr": 1e-3, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "data": {"max_length": 256, "batch_size": 2}}


@pytest.fixture
def study_config(tmp_path):
    return StudyConfig(out_dir=str(tmp_path / "study"), rounds=2, epochs_per_round=2,
                       ablation=["ucoder", "any_parsable"],
                       benchmark=benchmark(tmp_path / "toy.jsonl"), max_new_tokens=8,
                       eval_batch_size=4, n_boot=200)


def finished_files(out):
    return {p: p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.name in ("fit.json", "selected.jsonl", "estimate.json")
            or p.parent.name == "evals"}


def test_killed_study_resumes_without_redoing_finished_steps(tiny_dir, study_config):  # noqa: F811
    fit = fit_config(tiny_dir)
    with pytest.raises(Killed):
        KilledStudy(study_config, fit).run()
    out = study_config.out_dir
    before = finished_files(__import__("pathlib").Path(out))
    assert any(p.name == "main_round_1.json" for p in before)

    study = Study(study_config, fit)
    result = study.run()
    assert study.done == ["any_parsable: fit", "any_parsable: evaluate"]
    after = finished_files(study.out)
    assert all(after[p] == t for p, t in before.items())  # nothing finished was rewritten

    saved = json.loads((study.out / "study.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["complete"]
    assert [r["round"] for r in saved["main"]] == [0, 1]
    assert set(saved["ablation"]) == {"ucoder", "any_parsable"}
    primary = saved["primary"]
    assert primary["kind"] == "primary" and 0.0 <= primary["mcnemar_p"] <= 1.0
    low, high = primary["ci"]
    assert low <= primary["diff"] <= high
    assert saved["base"]["problems"] == len(TASKS)
    assert saved["main"][1]["pairs"] > saved["main"][0]["pairs"] > 0  # cumulative pairs
    assert saved["estimate"]["total_s"] > 0
    # Two epochs per round: rounds at fit start and after epoch 1, none after the last.
    main = study.out / "main"
    assert sorted(p.name for p in main.glob("round_*")) == ["round_0", "round_1"]
    assert sorted(p.name for p in (main / "adapters").iterdir()) == [
        f"epoch_{k}" for k in range(4)]
    assert [json.loads((study.out / "evals" / f"main_round_{k}.json").read_text())["adapter"]
            for k in range(2)] == [str(main / "adapters" / f"epoch_{k}") for k in (1, 3)]
    assert (study.out / "study.png").stat().st_size > 1000
    # Each arm trained on its own pick from round 0's pool.
    for arm in ("ucoder", "any_parsable"):
        assert (study.out / "arms" / arm / "round_0" / "selected.jsonl").read_text()
