"""Run one fit of a study from a `ucoder fit` config mapping, resumably."""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path

from ucoder.jsonl import read_json, write_json

log = logging.getLogger("ucoder.study")

CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def fit_config(base: dict, root: Path, *, max_epochs: int, seed: int,
               train_file: str | None = None, keep_callbacks: bool = True) -> dict:
    """``base`` (a `ucoder fit` config) made into one study fit writing under ``root``.

    Every fit gets its own root, epochs and seed; the loop's callbacks are kept for the
    main arm (``keep_callbacks``) and dropped for the ablation's fixed-data fits. A
    checkpoint of its own (``last.ckpt``) lets a killed fit resume.
    """
    config = copy.deepcopy(base)
    config.pop("ckpt_path", None)
    config["seed_everything"] = seed
    trainer = config.setdefault("trainer", {})
    trainer.update(default_root_dir=str(root), max_epochs=max_epochs,
                   enable_checkpointing=True)
    kept = [cb for cb in (trainer.get("callbacks") or []) if keep_callbacks
            and _class_path(cb) != CHECKPOINT]
    trainer["callbacks"] = [{"class_path": CHECKPOINT,
                             "init_args": {"dirpath": str(root / "checkpoints"),
                                           "save_last": True}}, *kept]
    model = config.setdefault("model", {})
    model["adapter_dir"] = str(root / "adapters")
    if train_file is not None:
        config.setdefault("data", {})["train_file"] = train_file
    return config


def _class_path(callback) -> str | None:
    return callback.get("class_path") if isinstance(callback, dict) else None


def run_fit(config: dict, root: Path) -> dict:
    """Fit with ``config`` unless ``root/fit.json`` says it finished; return that record."""
    done = root / "fit.json"
    record = read_json(done)
    if record is not None:
        return record
    from lightning.pytorch.cli import LightningCLI

    from ucoder.data import SFTDataModule
    from ucoder.sft import UCoderModule

    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    argv, sys.argv = sys.argv, sys.argv[:1]  # the config is ``args``, not this command line
    try:
        cli = LightningCLI(UCoderModule, SFTDataModule, args=config, run=False,
                           save_config_callback=None)
    finally:
        sys.argv = argv
    last = root / "checkpoints" / "last.ckpt"
    if last.exists():
        log.info("fit %s: resuming from %s", root, last)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule,
                    ckpt_path=str(last) if last.exists() else None)
    epochs = cli.trainer.current_epoch
    record = {"root": str(root), "epochs": epochs,
              "adapters": sorted(p.name for p in (root / "adapters").glob("epoch_*")),
              "train_loss": _losses(cli.trainer),
              "seconds": round(time.perf_counter() - start, 1)}
    write_json(done, record)
    return record


def _losses(trainer) -> dict[str, float]:
    metrics = trainer.callback_metrics
    return {k: float(v) for k, v in metrics.items() if k.startswith("train/") and
            getattr(v, "numel", lambda: 1)() == 1}


def adapter_after_round(root: Path, round_index: int, epochs_per_round: int) -> Path:
    """The adapter saved at the end of ``round_index``'s last training epoch."""
    return root / "adapters" / f"epoch_{(round_index + 1) * epochs_per_round - 1}"
