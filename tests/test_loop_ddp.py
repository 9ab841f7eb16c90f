"""The loop under DDP on 2 CPU processes (gloo), launched like users do: torchrun -m ucoder
fit. Each rank generates its share of a round, rank 0 merges, both train on one file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.test_sft import make_tiny_model_dir
from tests.test_sft_ddp import REPO, _free_port
from ucoder.jsonl import read_jsonl

LOOP = {
    "class_path": "ucoder.callbacks.SelfTraining",
    "init_args": {
        "round_step": {"class_path": "tests.test_loop.ScriptedRound",
                       "init_args": {"round_config": {"problems": 2, "tests": 3, "samples": 4},
                                     "batch_size": 4}},
        "evaluate": {"class_path": "ucoder.callbacks.PassAtKEvaluator",
                     "init_args": {"limit": 2, "max_new_tokens": 8, "batch_size": 4}},
        "probe": {"class_path": "ucoder.callbacks.ProbeRefitter",
                  "init_args": {"min_examples": 4, "max_epochs": 5}},
        "report": {"class_path": "ucoder.callbacks.ReportWriter",
                   "init_args": {"plots": False}},
    },
}


@pytest.mark.integration
def test_loop_under_ddp_merges_shards_and_trains_both_ranks_on_one_file(tmp_path):
    run = tmp_path / "run"
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 2,
                    "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(run),
                    "reload_dataloaders_every_n_epochs": 1, "callbacks": [LOOP]},
        "model": {"model": make_tiny_model_dir(tmp_path / "tiny"), "load_in_4bit": False,
                  "lr": 1e-3, "adapter_dir": "", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"batch_size": 2, "max_length": 256},
    }
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "ucoder", "fit",
           "--config", str(tmp_path / "ddp.yaml")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    for k in (0, 1):
        shards = [json.loads((run / f"round_{k}" / f"rank_{r}" / "stats.json").read_text())
                  for r in (0, 1)]
        merged = json.loads((run / f"round_{k}" / "stats.json").read_text())
        assert merged["selected"] == sum(s["selected"] for s in shards) > 0
        weights = [s["counts"]["consensus_rows"] for s in shards]
        mean = sum(s["mean_execution_success"] * w for s, w in zip(shards, weights))
        assert merged["mean_execution_success"] == pytest.approx(mean / sum(weights), abs=1e-4)
        rows = read_jsonl(run / f"round_{k}" / "selected.jsonl")
        assert {r["problem_id"].split("/")[0] for r in rows} == {"rank0", "rank1"}
    report = json.loads((run / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert [e["when"] for e in report["eval"]] == ["before", "epoch_0", "epoch_1"]
    assert report["eval"][0]["problems"] == 2
    first, second = (read_jsonl(run / f"train_round_{k}.jsonl") for k in (0, 1))
    assert first and len(second) > len(first)
