"""ReportWriter: ``report.json`` and PNG plots of the loop, from the loop's own records."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ucoder.callbacks.base import log, relative
from ucoder.jsonl import write_json


class ReportWriter:
    """Assemble and write ``<root>/report.json`` (and ``<root>/plots/*.png``).

    Per round: stage counts, drop reasons, selected and new pairs, cluster sizes, probe
    AUROC, the train loss of the epochs trained on it, pass@1 after them, seconds.
    Paths are relative to ``root``, so the same run reads the same wherever it lives.

    Args:
        plots: also draw PNG plots (matplotlib, no display needed).
    """

    def __init__(self, plots: bool = True):
        self.plots = plots

    def build(self, state: dict[str, Any], root: Path, *, every_n_epochs: int = 1,
              benchmark: dict | None = None) -> dict[str, Any]:
        """The report of a loop whose records are ``state`` (``SelfTraining.state_dict()``:
        ``rounds``, ``probes``, ``evals``, ``epochs``)."""
        evals, epochs = state.get("evals", []), state.get("epochs", [])
        rounds = [self._round(r, state, every_n_epochs, root) for r in state.get("rounds", [])]
        before = next((e for e in evals if e["when"] == "before"), None)
        after = [e for e in evals if e["when"] != "before"]
        return {
            "name": root.name,
            "updated": datetime.datetime.now().isoformat(timespec="seconds"),
            "epochs_done": len(epochs),
            "pass@1_before": before["pass@1"] if before else None,
            "pass@1_after": after[-1]["pass@1"] if after else None,
            "benchmark": benchmark,
            "rounds": rounds,
            "epochs": epochs,
            "eval": evals,
        }

    @staticmethod
    def _round(r: dict, state: dict, every: int, root: Path) -> dict[str, Any]:
        epochs = range(r["round"] * every, (r["round"] + 1) * every)
        after = [e for e in state.get("evals", [])
                 if e.get("epoch") in epochs and e["when"] != "before"]
        fit = next((h for h in state.get("probes", []) if h["round"] == r["round"]), None)
        if fit and fit.get("path"):
            fit = {**fit, "path": relative(fit["path"], root)}
        stats = r.get("stats", {})
        return {
            "round": r["round"], "selected": r["selected"], "new_pairs": r["new_pairs"],
            "train_pairs": r["train_pairs"], "seconds": r["seconds"],
            "stage_counts": stats.get("counts", {}),
            "drop_reasons": stats.get("dropped", {}),
            "cluster_sizes": stats.get("cluster_size_histogram", {}),
            "stage_seconds": stats.get("seconds", {}),
            "clean_selected": stats.get("clean_selected"),
            "pairs_per_generation_minute": stats.get("pairs_per_generation_minute"),
            "rating": stats.get("rating", {}),
            "probe_auroc": fit.get("auroc") if fit else None,
            "probe": fit,
            "probe_in_next_selection": fit.get("used_in_selection") if fit else None,
            "train_loss": [e["train_loss"] for e in state.get("epochs", [])
                           if e["epoch"] in epochs],
            "pass@1_after": after[-1]["pass@1"] if after else None,
            "dir": relative(r["dir"], root),
        }

    def write(self, report: dict[str, Any], root: Path) -> Path:
        """Write ``report`` to ``root/report.json`` (and the plots); returns its path."""
        path = root / "report.json"
        write_json(path, report)
        if self.plots:
            from ucoder.callbacks.plots import draw_report

            try:
                plots = draw_report(report, root / "plots")
                report["plots"] = [relative(p, root) for p in plots]
                write_json(path, report)
            except Exception as err:  # a plot must never end a training run
                log.warning("report plots failed: %s", err)
        return path
