"""The study's statistics, its ``study.json``, the printed table and the plot.

The primary result is fixed before the run: the main arm after its last round against
the base, McNemar's exact p on the paired per-problem outcomes and a paired bootstrap
interval of the difference. Every other comparison is marked exploratory.
"""

from __future__ import annotations

from ucoder.evaluation import metrics


def describe(record: dict, study) -> dict:
    """pass@1 of one evaluation with its bootstrap interval over problems."""
    low, high = metrics.bootstrap_ci(record["outcomes"], n_boot=study.n_boot,
                                     alpha=study.alpha, seed=study.seed)
    return {"pass@1": record["pass@1"], "solved": record["solved"],
            "problems": record["problems"], "ci": [low, high],
            "failures": record["failures"], "solved_ids": record["solved_ids"],
            "seconds": record["seconds"]}


def compare(after: dict, before: dict, study, *, primary: bool = False) -> dict:
    """``after`` against ``before`` on the same problems: difference, interval, p."""
    a, b = after["outcomes"], before["outcomes"]
    if len(a) != len(b):
        raise ValueError(f"cannot compare evaluations of {len(a)} and {len(b)} problems")
    diff, low, high = metrics.paired_bootstrap_diff(a, b, n_boot=study.n_boot,
                                                    alpha=study.alpha, seed=study.seed)
    ids = [row["task_id"] for row in after["per_problem"]]
    return {"diff": diff, "ci": [low, high], "mcnemar_p": metrics.mcnemar_exact(a, b),
            "gained": [t for t, x, y in zip(ids, a, b) if x and not y],
            "lost": [t for t, x, y in zip(ids, a, b) if y and not x],
            "kind": "primary" if primary else "exploratory"}


def build(study, evals: dict, fits: dict, pairs: dict, estimate: dict | None,
          seconds: float) -> dict:
    """``study.json``: per arm and round pass@1, ids, interval, p, pairs, seconds."""
    base = evals.get("base")
    main_keys = sorted((k for k in evals if k.startswith("main_round_")),
                       key=lambda k: int(k.rsplit("_", 1)[1]))
    main = [{"round": int(k.rsplit("_", 1)[1]), **describe(evals[k], study),
             "pairs": pairs.get(k), "vs_base": compare(evals[k], base, study)
             if base else None} for k in main_keys]
    if main and base:
        main[-1]["vs_base"] = compare(evals[main_keys[-1]], base, study, primary=True)
    arms = {}
    for arm in study.ablation:
        record = evals.get(f"arm_{arm}")
        if record is None:
            continue
        arms[arm] = {**describe(record, study), "pairs": pairs.get(f"arm_{arm}"),
                     "vs_base": compare(record, base, study) if base else None}
    if "ucoder" in arms:
        for arm in arms:
            if arm != "ucoder":
                arms[arm]["ucoder_vs_this"] = compare(evals["arm_ucoder"],
                                                      evals[f"arm_{arm}"], study)
    return {"settings": _settings(study), "base": describe(base, study) if base else None,
            "main": main, "ablation": arms, "primary": main[-1]["vs_base"] if main else None,
            "fits": fits, "estimate": estimate, "seconds": round(seconds, 1),
            "complete": base is not None and len(main) == study.rounds
            and len(arms) == len(study.ablation)}


def _settings(study) -> dict:
    from dataclasses import asdict

    return asdict(study)


def table(result: dict) -> str:
    """The printed table: every evaluation, its interval and its comparison with the base."""
    lines = [f"{'evaluation':<28} {'pass@1':>7} {'solved':>8} {'95% CI':>15} "
             f"{'vs base':>8} {'p':>7}  kind"]

    def line(name, entry):
        vs = entry.get("vs_base") or {}
        low, high = entry["ci"]
        lines.append(f"{name:<28} {entry['pass@1']:>7.3f} "
                     f"{entry['solved']:>3}/{entry['problems']:<4} "
                     f"{low:>7.3f}-{high:<7.3f} {vs.get('diff', 0.0):>+8.3f} "
                     f"{vs.get('mcnemar_p', float('nan')):>7.3g}  {vs.get('kind', '')}")

    if result["base"]:
        line("base", result["base"])
    for entry in result["main"]:
        line(f"main arm, round {entry['round']}", entry)
    for arm, entry in result["ablation"].items():
        line(f"ablation: {arm}", entry)
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """pass@1 per round of the main arm with interval bars, beside the ablation arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    points = ([("base", result["base"])] if result["base"] else []) + [
        (f"round {e['round']}", e) for e in result["main"]]
    _bars(left, points, "main arm (ucoder policy, on-policy rounds)", line=True)
    _bars(right, list(result["ablation"].items()), "one-round ablation (from round 0's pool)")
    left.set_ylabel("greedy pass@1 (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(ax, points, title, line=False):
    xs = range(len(points))
    ys = [e["pass@1"] for _, e in points]
    errs = [[y - e["ci"][0] for y, (_, e) in zip(ys, points)],
            [e["ci"][1] - y for y, (_, e) in zip(ys, points)]]
    ax.errorbar(xs, ys, yerr=errs, fmt="o-" if line else "o", capsize=4)
    ax.set_xticks(list(xs), [name for name, _ in points], rotation=20)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
