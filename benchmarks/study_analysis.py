"""Where a study's gain is made or lost, from the files of one finished (or partial) run.

    python benchmarks/study_analysis.py runs/study [--out benchmarks/study_analysis.md]

It reads only what ``ucoder study`` wrote (``evals/*.json``, the training files, the fits'
``lightning_logs``) and prints a markdown report:

- failures of every evaluation: format (no runnable definition of the entry point) split
  into "cut after a whole definition" (a parsable prefix defines the entry point; the
  sample ran on into a second copy or the length cap) and "no whole definition", and logic;
- problems gained and lost against the base;
- the training pairs most like each lost and gained problem (bag-of-words cosine of the
  HumanEval prompt and the pair's prompt);
- what the training pairs look like (counts, lengths, docstrings in the completion);
- the loss curves of every fit (``--loss-plot``);
- ``--rescore``: every evaluation scored again with the longest parsable line-prefix of
  each greedy code (what EvalPlus's sanitizer keeps), in the sandbox, with McNemar's p
  against the base rescored the same way. Exploratory: the study's own scoring is the
  pre-registered one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections import Counter
from pathlib import Path

from ucoder.jsonl import read_jsonl
from ucoder.study.evals import failure_kind

WORD = re.compile(r"[A-Za-z_]+")


def defines(code: str, entry_point: str) -> bool:
    """Whether ``code`` parses and defines ``entry_point`` (the study's own test)."""
    return failure_kind(code, entry_point) == "logic"


def format_subkind(code: str, entry_point: str) -> str:
    """``cut after a whole definition`` when some line-prefix of ``code`` defines the entry
    point and parses, else ``no whole definition``."""
    if longest_definition(code, entry_point) is not None:
        return "cut after a whole definition"
    return "no whole definition"


def longest_definition(code: str, entry_point: str) -> str | None:
    """The longest line-prefix of ``code`` that parses and defines ``entry_point``."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        prefix = "\n".join(lines[:end]) + "\n"
        if defines(prefix, entry_point):
            return prefix
    return None


def rescore(evals: dict[str, dict], problems: dict) -> dict[str, list[int]]:
    """Per evaluation, 0/1 outcomes with format failures cut to their longest definition."""
    from ucoder.evaluation.programs import hidden_job, sanitize
    from ucoder.sandbox import Sandbox

    jobs, where = [], {}
    for name, record in evals.items():
        for i, row in enumerate(record["per_problem"]):
            problem = problems[row["task_id"]]
            cut = (longest_definition(row["code"], problem.entry_point)
                   if row["failure"] == "format" else None)
            if cut is not None:
                job_id = f"{name}|{i}"
                jobs.append(hidden_job(problem, sanitize(cut, problem.entry_point), job_id,
                                       10.0))
                where[job_id] = (name, i)
    outcomes = {name: list(record["outcomes"]) for name, record in evals.items()}
    with Sandbox(timeout=10.0) as box:
        for result in box.run(jobs, progress=True):
            name, i = where[result.id]
            outcomes[name][i] = int(result.passed)
    return outcomes


def rescore_table(evals: dict[str, dict], outcomes: dict[str, list[int]]) -> list[str]:
    from ucoder.evaluation import metrics

    base = outcomes["base"]
    rows = ["| evaluation | solved (study's scoring) | solved (longest definition) | "
            "95% CI | vs base | McNemar p |", "|---|---|---|---|---|---|"]
    for name, record in evals.items():
        ys = outcomes[name]
        low, high = metrics.bootstrap_ci(ys, n_boot=10000, seed=0)
        diff, dlow, dhigh = metrics.paired_bootstrap_diff(ys, base, n_boot=10000, seed=0)
        p = metrics.mcnemar_exact(ys, base) if name != "base" else float("nan")
        rows.append(f"| {name} | {record['solved']}/{len(ys)} | {sum(ys)}/{len(ys)} | "
                    f"{low:.3f}-{high:.3f} | {diff:+.3f} ({dlow:+.3f} to {dhigh:+.3f}) | "
                    f"{p:.3g} |")
    return rows


def failure_table(evals: dict[str, dict], entry_points: dict[str, str]) -> list[str]:
    rows = ["| evaluation | solved | format: cut after a whole definition | "
            "format: no whole definition | logic |", "|---|---|---|---|---|"]
    for name, record in evals.items():
        kinds = Counter()
        for row in record["per_problem"]:
            if row["failure"] == "format":
                kinds[format_subkind(row["code"], entry_points[row["task_id"]])] += 1
            elif row["failure"]:
                kinds["logic"] += 1
        rows.append(f"| {name} | {record['solved']}/{record['problems']} | "
                    f"{kinds['cut after a whole definition']} | "
                    f"{kinds['no whole definition']} | {kinds['logic']} |")
    return rows


def bag(text: str) -> Counter:
    return Counter(w.lower() for w in WORD.findall(text))


def cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b[k] for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


def nearest_pairs(prompt: str, pairs: list[dict], k: int = 2) -> list[tuple[float, dict]]:
    query = bag(prompt)
    scored = [(cosine(query, bag(p["prompt"])), p) for p in pairs]
    return sorted(scored, key=lambda x: -x[0])[:k]


def pair_title(pair: dict) -> str:
    code = pair["prompt"].partition("```python\n")[2].partition("```")[0]
    head = next((ln.strip() for ln in code.splitlines() if ln.startswith("def ")), "?")
    return head[:90]


def gained_lost(evals: dict[str, dict], base: str = "base") -> list[str]:
    ref = {r["task_id"]: r["passed"] for r in evals[base]["per_problem"]}
    rows = ["| evaluation | gained | lost | failure kinds of the lost |", "|---|---|---|---|"]
    for name, record in evals.items():
        if name == base:
            continue
        gained = [r["task_id"] for r in record["per_problem"]
                  if r["passed"] and not ref[r["task_id"]]]
        lost = [r for r in record["per_problem"] if ref[r["task_id"]] and not r["passed"]]
        kinds = Counter(r["failure"] for r in lost)
        rows.append(f"| {name} | {', '.join(gained) or '-'} | "
                    f"{', '.join(r['task_id'] for r in lost) or '-'} | {dict(kinds) or '-'} |")
    return rows


def resemblance(evals: dict[str, dict], prompts: dict[str, str], pairs: list[dict],
                name: str, base: str = "base") -> list[str]:
    ref = {r["task_id"]: r["passed"] for r in evals[base]["per_problem"]}
    rows = [f"| {name}: problem | change | nearest training pairs (cosine) |", "|---|---|---|"]
    for r in evals[name]["per_problem"]:
        if r["passed"] == ref[r["task_id"]]:
            continue
        change = "gained" if r["passed"] else "lost"
        near = "; ".join(f"`{pair_title(p)}` ({s:.2f})"
                         for s, p in nearest_pairs(prompts[r["task_id"]], pairs))
        rows.append(f"| {r['task_id']} | {change} | {near} |")
    return rows


def pair_stats(name: str, pairs: list[dict]) -> str:
    if not pairs:
        return f"| {name} | 0 | - | - | - |"
    lines = [p["completion"].count("\n") + 1 for p in pairs]
    doc = sum('"""' in p["completion"] or "'''" in p["completion"] for p in pairs)
    median = sorted(lines)[len(lines) // 2]
    problems = len({p.get("problem_id", p["prompt"]) for p in pairs})
    return f"| {name} | {len(pairs)} | {problems} | {median} | {doc} |"


def loss_curves(root: Path) -> dict[str, list[tuple[int, float]]]:
    """``{fit: [(step, train/loss)]}`` from every fit's CSV logs under ``root``."""
    curves = {}
    for csv_path in sorted(root.glob("**/lightning_logs/version_*/metrics.csv")):
        fit = csv_path.parents[2].relative_to(root).as_posix() or "."
        with csv_path.open() as f:
            points = [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(f)
                      if row.get("train/loss")]
        curves.setdefault(fit, []).extend(points)
    return curves


def plot_losses(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for fit, points in curves.items():
        if points:
            ax.plot(*zip(*sorted(points)), label=fit, alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train/loss (per step)")
    ax.set_title("loss curves of the study's fits")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_files(root: Path) -> dict[str, list[dict]]:
    files = {p.stem: p for p in sorted((root / "main").glob("train_round_*.jsonl"))}
    files |= {f"arm {p.parents[1].name}": p
              for p in sorted((root / "arms").glob("*/round_0/selected.jsonl"))}
    return {name: read_jsonl(path) for name, path in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--loss-plot", type=Path, default=None)
    parser.add_argument("--rescore", action="store_true",
                        help="also score the longest parsable definition (sandbox)")
    args = parser.parse_args()
    from ucoder.evaluation import load_benchmark

    problems = load_benchmark("humaneval")
    entry = {p.task_id: p.entry_point for p in problems}
    prompts = {p.task_id: p.prompt for p in problems}
    evals = {p.stem: json.loads(p.read_text())
             for p in sorted((args.root / "evals").glob("*.json"))}
    evals = dict(sorted(evals.items(), key=lambda kv: (kv[0] != "base", kv[0])))
    pairs = training_files(args.root)
    out = ["## Failures per evaluation", "", *failure_table(evals, entry), "",
           "## Problems gained and lost against the base", "", *gained_lost(evals), "",
           "## The training pairs", "",
           "| file | pairs | problems | median completion lines | completions with a docstring |",
           "|---|---|---|---|---|", *[pair_stats(n, p) for n, p in pairs.items()], ""]
    last_main = max((n for n in evals if n.startswith("main_round_")), default=None)
    if last_main:
        train = pairs.get(f"train_round_{last_main.rsplit('_', 1)[1]}", [])
        out += [f"## Training pairs most like the problems {last_main} changed", "",
                *resemblance(evals, prompts, train, last_main), ""]
    curves = loss_curves(args.root)
    out += ["## Loss per fit (first and last logged step)", "", "| fit | steps | first | last |",
            "|---|---|---|---|"]
    out += [f"| {fit} | {len(pts)} | {sorted(pts)[0][1]:.3f} | {sorted(pts)[-1][1]:.3f} |"
            for fit, pts in curves.items() if pts]
    if args.rescore:
        out += ["", "## Exploratory: scored on the longest parsable definition", "",
                *rescore_table(evals, rescore(evals, {p.task_id: p for p in problems}))]
    if args.loss_plot and curves:
        plot_losses(curves, args.loss_plot)
    text = "\n".join(out) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
