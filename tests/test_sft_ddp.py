"""DDP on 2 CPU processes (gloo), launched like users do: torchrun -m ucoder fit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tests.test_sft import ROWS, make_tiny_model_dir
from ucoder.jsonl import write_jsonl

REPO = Path(__file__).resolve().parents[1]


class DumpLora(L.Callback):
    """Saves this rank's LoRA weights at train start and at fit end (used by the test)."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def _dump(self, trainer, module, tag: str) -> None:
        weights = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        torch.save({"weights": weights, "world_size": trainer.world_size,
                    "global_step": trainer.global_step},
                   self.out_dir / f"{tag}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer, module):
        self._dump(trainer, module, "start")

    def on_fit_end(self, trainer, module):
        self._dump(trainer, module, "end")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_ddp_two_cpu_processes_keep_identical_lora_weights(tmp_path):
    model_dir = make_tiny_model_dir(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "sft.jsonl", ROWS)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 3,
                    "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "run"),
                    "callbacks": [{"class_path": "tests.test_sft_ddp.DumpLora",
                                   "init_args": {"out_dir": str(tmp_path)}}]},
        "model": {"model": model_dir, "load_in_4bit": False, "lr": 5e-3,
                  "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
        "data": {"train_file": str(data), "batch_size": 2},
    }
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "ucoder", "fit",
           "--config", str(tmp_path / "ddp.yaml")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]

    start = [torch.load(tmp_path / f"start_rank{r}.pt") for r in (0, 1)]
    end = [torch.load(tmp_path / f"end_rank{r}.pt") for r in (0, 1)]
    assert all(e["world_size"] == 2 and e["global_step"] == 3 for e in end)
    names = end[0]["weights"].keys()
    assert names and all("lora_" in n for n in names)
    for n in names:
        assert torch.equal(end[0]["weights"][n], end[1]["weights"][n]), n
    moved = [n for n in names if not torch.equal(start[0]["weights"][n], end[0]["weights"][n])]
    assert len(moved) == len(names)  # every LoRA matrix trained, in lockstep on both ranks
    assert (tmp_path / "run" / "adapters" / "epoch_0" / "adapter_config.json").is_file()
