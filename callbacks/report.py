"""RoundReport: ``report.json`` and PNG plots of the loop, rewritten as it goes."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ucoder.callbacks.base import RoundListener, find_callback, log, loop_dir
from ucoder.jsonl import write_json


class RoundReport(RoundListener):
    """Write ``<root>/report.json`` and ``<root>/plots/*.png`` after every round and epoch.

    Per round: stage counts, drop reasons, selected and new pairs, cluster sizes, probe
    AUROC, the train loss of the epochs trained on it, pass@1 after them, seconds.
    It reads what :class:`RegenerateData`, :class:`RefitProbe` and
    :class:`EvaluatePassAtK` recorded, so their order in the callback list is free.

    Args:
        out_dir: directory of the report (default: the Trainer's ``default_root_dir``).
        plots: also draw PNG plots (matplotlib, no display needed).
    """

    def __init__(self, out_dir: str | None = None, plots: bool = True):
        self.out_dir, self.plots = out_dir, plots
        self.epochs: list[dict[str, Any]] = []  # {"epoch", "train_loss", "step"}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.epochs = [e for e in self.epochs if e["epoch"] != trainer.current_epoch]
        self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                            "train_loss": None if loss is None else float(loss)})
        self.write(trainer)

    def on_round_end(self, trainer, pl_module, round_index, round_dir, stats) -> None:
        self.write(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        path = self.write(trainer)
        if path is not None:
            log.info("report: %s", path)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = list(state.get("epochs", []))

    def write(self, trainer) -> Path | None:
        """Assemble and write the report (rank 0 only); returns its path."""
        if not trainer.is_global_zero:
            return None
        report = self.build(trainer)
        root = loop_dir(trainer, self.out_dir)
        path = root / "report.json"
        write_json(path, report)
        if self.plots:
            from ucoder.callbacks.plots import draw_report

            try:
                report["plots"] = [str(p) for p in draw_report(report, root / "plots")]
                write_json(path, report)
            except Exception as err:  # a plot must never end a training run
                log.warning("report plots failed: %s", err)
        return path

    def build(self, trainer) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        from ucoder.callbacks.evaluate import EvaluatePassAtK
        from ucoder.callbacks.probe import RefitProbe
        from ucoder.callbacks.regenerate import RegenerateData

        regen = find_callback(trainer, RegenerateData)
        probe = find_callback(trainer, RefitProbe)
        evaluate = find_callback(trainer, EvaluatePassAtK)
        evals = evaluate.history if evaluate else []
        every = regen.every_n_epochs if regen else 1
        rounds = []
        for r in (regen.rounds if regen else []):
            epochs = range(r["round"] * every, (r["round"] + 1) * every)
            after = [e for e in evals if e.get("epoch") in epochs and e["when"] != "before"]
            fit = next((h for h in (probe.history if probe else []) if h["round"] == r["round"]),
                       None)
            stats = r.get("stats", {})
            rounds.append({
                "round": r["round"], "selected": r["selected"], "new_pairs": r["new_pairs"],
                "train_pairs": r["train_pairs"], "seconds": r["seconds"],
                "stage_counts": stats.get("counts", {}),
                "drop_reasons": stats.get("dropped", {}),
                "cluster_sizes": stats.get("cluster_size_histogram", {}),
                "stage_seconds": stats.get("seconds", {}),
                "probe_auroc": fit.get("auroc") if fit else None,
                "probe": fit,
                "train_loss": [e["train_loss"] for e in self.epochs if e["epoch"] in epochs],
                "pass@1_after": after[-1]["pass@1"] if after else None,
                "dir": r["dir"],
            })
        before = next((e for e in evals if e["when"] == "before"), None)
        after = [e for e in evals if e["when"] != "before"]
        return {
            "name": Path(trainer.default_root_dir).name,
            "updated": datetime.datetime.now().isoformat(timespec="seconds"),
            "epochs_done": len(self.epochs),
            "pass@1_before": before["pass@1"] if before else None,
            "pass@1_after": after[-1]["pass@1"] if after else None,
            "benchmark": {"name": evaluate.benchmark, "problems": evaluate.limit}
            if evaluate else None,
            "rounds": rounds,
            "epochs": self.epochs,
            "eval": evals,
        }
