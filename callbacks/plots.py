"""PNG plots of a loop report (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def draw_report(report: dict, out_dir: Path) -> list[Path]:
    """Draw ``progress.png`` (data, quality, loss per round) and ``stages.png`` (what each
    stage kept and how long it took); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "progress.png", out_dir / "stages.png"]
    for path, draw, size in ((paths[0], _progress, (15, 4)), (paths[1], _stages, (12, 4))):
        fig, axes = plt.subplots(1, 3 if draw is _progress else 2, figsize=size)
        draw(report, axes)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return paths


def _progress(report: dict, axes) -> None:
    rounds = report.get("rounds", [])
    xs = [r["round"] for r in rounds]
    ax = axes[0]
    ax.bar([x - 0.2 for x in xs], [r["selected"] for r in rounds], 0.4, label="selected")
    ax.bar([x + 0.2 for x in xs], [r["new_pairs"] for r in rounds], 0.4, label="new pairs")
    ax.plot(xs, [r["train_pairs"] for r in rounds], "k.-", label="training pairs")
    ax.set_xticks(xs)
    _style(ax, "selected data per round", "round", "pairs")

    ax = axes[1]
    evals = report.get("eval", [])
    ax.plot(range(len(evals)), [e["pass@1"] for e in evals], "o-", label="greedy pass@1")
    ax.set_xticks(range(len(evals)), [e["when"] for e in evals], rotation=30, fontsize=8)
    aurocs = [(r["round"], r["probe_auroc"]) for r in rounds if r["probe_auroc"] is not None]
    if aurocs:
        twin = ax.twinx()
        twin.plot([a[0] + 1 for a in aurocs], [a[1] for a in aurocs], "s--", color="tab:red",
                  label="probe AUROC (consensus labels)")
        twin.set_ylim(0, 1)
        twin.legend(loc="lower right", fontsize=8)
    _style(ax, "quality", "evaluation", "pass@1")

    epochs = report.get("epochs", [])
    axes[2].plot([e["epoch"] for e in epochs], [e["train_loss"] for e in epochs], "o-",
                 label="train/loss (last step)")
    _style(axes[2], "training", "epoch", "loss")


def _stages(report: dict, axes) -> None:
    rounds = report.get("rounds", [])
    # The pipeline's stages in order (those that report seconds), one series per round.
    stages = list(dict.fromkeys(k for r in rounds for k in (r.get("stage_seconds") or {})))
    width = 0.8 / max(1, len(rounds))
    for k, r in enumerate(rounds):
        counts = r.get("stage_counts") or {}
        axes[0].plot(stages, [_number(counts.get(st, 0)) for st in stages], "o-",
                     label=f"round {r['round']}")
        seconds = r.get("stage_seconds") or {}
        axes[1].bar([i + k * width for i in range(len(stages))],
                    [_number(seconds.get(st, 0)) for st in stages], width,
                    label=f"round {r['round']}")
    _style(axes[0], "items kept per stage", "stage", "count")
    axes[0].tick_params(axis="x", rotation=30)
    axes[1].set_xticks([i + 0.4 - width / 2 for i in range(len(stages))], stages, rotation=30)
    _style(axes[1], "seconds per stage", "stage", "seconds")


def _number(value) -> float:
    if isinstance(value, dict):  # e.g. {"in": 12, "out": 9}: plot what was kept
        value = value.get("out", value.get("kept", next(iter(value.values()), 0)))
    return float(value) if isinstance(value, (int, float)) else 0.0


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
