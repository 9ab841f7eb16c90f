"""``ucoder probe fit|score|sweep``: hidden-state correctness probes over a candidates JSONL.

Each line of the candidates file is one (prompt, completion) pair with a problem id and,
for ``fit``/``sweep``, a boolean label in a field the user names (``--label-field``):
consensus membership, real test results, anything true/false.

    ucoder probe fit   --candidates c.jsonl --label-field passed --out probe/
    ucoder probe sweep --candidates c.jsonl --label-field passed --out probe/ --layers all
    ucoder probe score --candidates c.jsonl --probe probe/ --out scored.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ucoder.commands.options import EMBEDDED_MODEL as EMBEDDED
from ucoder.commands.options import add_model_arguments
from ucoder.jsonl import JsonlError, iter_jsonl, write_json, write_jsonl

# Hidden states need the transformers model: no --backend here.
MODEL_FIELDS = ("model", "adapter", "device", "dtype", "load_in_4bit", "threads")
HELP = "fit, sweep or apply a hidden-state correctness probe over a candidates JSONL"


class ProbeCommandError(ValueError):
    """A user error: names the option, the value and what is allowed."""


@dataclass
class Candidates:
    rows: list[dict]
    prompts: list[str]
    completions: list[str]
    groups: list[str]
    labels: list[bool] | None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", type=Path, required=True, help="candidates JSONL")
    add_model_arguments(p, model_default=None, only=MODEL_FIELDS,
                        model_help="HF id, local dir or embedded:smollm2-135m-instruct "
                                   "(default; score: the probe's base model)")
    p.add_argument("--prompt-field", default="auto",
                   help="exact text the model saw (auto: prompt_text if the rows have it, "
                        "as round candidates do, else prompt)")  # fmt: skip
    p.add_argument("--completion-field", default="auto",
                   help="text the model wrote (auto: raw if the rows have it, else completion)")
    p.add_argument("--group-field", default="problem_id", help="problem id (grouped split)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")


def _train_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-field", required=True, help="boolean field to predict")
    p.add_argument("--out", type=Path, required=True, help="directory for the probe")
    p.add_argument("--kind", choices=["linear", "mlp"], default="linear")
    p.add_argument("--position", default="last_completion",
                   choices=["last_completion", "last_prompt", "mean_completion"])
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="probe_command", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="train one probe at one layer")
    _common(fit)
    _train_opts(fit)
    fit.add_argument("--layer", type=int, default=-1, help="hidden-state index (-1 = last)")
    fit.add_argument("--objective", default="pointwise",
                     choices=["pointwise", "pairwise", "listwise"],
                     help="pointwise: correct or not across problems (the --kind probe); "
                          "pairwise/listwise: rank the candidates inside each problem "
                          "(linear, Platt-calibrated; what a selection needs)")
    sweep = sub.add_parser("sweep", help="one probe per layer; keep the best on validation")
    _common(sweep)
    _train_opts(sweep)
    sweep.add_argument("--layers", default="all", help="'all' or comma-separated indices")
    score = sub.add_parser("score", help="add the probe's probability to every row")
    _common(score)
    score.add_argument("--probe", type=Path, required=True, help="directory of a saved probe")
    score.add_argument("--out", type=Path, required=True, help="scored JSONL to write")
    score.add_argument("--score-field", default="probe_score")


def read_candidates(
    path: Path, prompt: str, completion: str, group: str, label: str | None
) -> Candidates:
    """Read and check every line; errors name the file, the line and the option."""
    if not path.is_file():
        raise ProbeCommandError(f"--candidates: {path} does not exist")
    rows, labels = [], [] if label else None
    for lineno, row in iter_jsonl(path):
        if isinstance(row, JsonlError):
            raise ProbeCommandError(f"--candidates: {row}")
        if not rows:  # "auto": what the model read and wrote (C3), when the rows hold it
            prompt = _auto(row, prompt, "prompt_text", "prompt")
            completion = _auto(row, completion, "raw", "completion")
            fields = [("--prompt-field", prompt), ("--completion-field", completion),
                      ("--group-field", group)]  # fmt: skip
        for option, name in fields:
            if name not in row:
                raise ProbeCommandError(f"{path}:{lineno}: {option} {name!r} is missing")
        for option, name in fields[:2]:
            if not isinstance(row[name], str):
                raise ProbeCommandError(
                    f"{path}:{lineno}: {option} {name!r} must be a string, "
                    f"got {type(row[name]).__name__}"
                )
        if label:
            if label not in row:
                raise ProbeCommandError(f"{path}:{lineno}: --label-field {label!r} is missing")
            if not isinstance(row[label], bool):
                raise ProbeCommandError(
                    f"{path}:{lineno}: --label-field {label!r} is {row[label]!r}, not a "
                    "boolean; allowed values are true and false"
                )
            labels.append(row[label])
        rows.append(row)
    if not rows:
        raise ProbeCommandError(f"--candidates: {path} has no rows")
    if labels is not None and len(set(labels)) < 2:
        raise ProbeCommandError(
            f"--label-field {label!r}: every row is {labels[0]}; a probe needs both classes"
        )
    return Candidates(rows, [r[prompt] for r in rows], [r[completion] for r in rows],
                      [str(r[group]) for r in rows], labels)  # fmt: skip


def _auto(row: dict, option: str, preferred: str, fallback: str) -> str:
    if option != "auto":
        return option
    return preferred if isinstance(row.get(preferred), str) and row[preferred] else fallback


def _load(args: argparse.Namespace, name: str):
    from ucoder.commands.options import load, model_options

    return load(dataclasses.replace(model_options(args), model=name))


def _layers(spec: str, option: str, n_layers: int) -> list[int]:
    from ucoder.probes.extract import resolve_layers

    if spec == "all":
        return list(range(n_layers + 1))
    try:
        layers = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ProbeCommandError(f"{option}: {spec!r} is not 'all' or comma-separated integers")
    try:
        resolve_layers(layers, n_layers)
    except ValueError as err:
        raise ProbeCommandError(f"{option}: {err}".replace("layers: ", "", 1)) from None
    return layers


def _features(args, model, tok, cands: Candidates, layers: list[int]):
    from ucoder.probes import extract_features

    return extract_features(model, tok, cands.prompts, cands.completions, layers=layers,
                            position=args.position, batch_size=args.batch_size)  # fmt: skip


def _fit(args: argparse.Namespace) -> int:
    from ucoder.probes import fit_probe, layer_sweep, num_hidden_layers, save_probe

    cands = read_candidates(args.candidates, args.prompt_field, args.completion_field,
                            args.group_field, args.label_field)  # fmt: skip
    name = args.model or EMBEDDED
    model, tok = _load(args, name)
    n_layers = num_hidden_layers(model)
    if args.probe_command == "fit":
        layers = _layers(str(args.layer), "--layer", n_layers)
    else:
        layers = _layers(args.layers, "--layers", n_layers)
    feats = _features(args, model, tok, cands, layers)
    common = dict(max_epochs=args.max_epochs, seed=args.seed, val_fraction=args.val_fraction,
                  position=args.position, meta={"label_field": args.label_field})  # fmt: skip
    report: dict = {"layers": layers, "n_rows": len(cands.rows)}
    if args.probe_command == "fit" and args.objective != "pointwise":
        probe, report["metrics"] = _fit_ranker(args, feats[:, 0], cands, layers[0])
    elif args.probe_command == "fit":
        probe, metrics = fit_probe(feats[:, 0], cands.labels, cands.groups, args.kind,
                                   layer=layers[0], **common)  # fmt: skip
        report["metrics"] = metrics
    else:
        result = layer_sweep(feats, cands.labels, cands.groups, layers, args.kind, **common)
        probe = result.best_probe
        report.update(best_layer=result.best_layer,
                      metrics={str(k): v for k, v in result.metrics.items()})  # fmt: skip
        print(result.table())
    save_probe(probe, args.out, model=model, base_model=name)
    write_json(args.out / f"{args.probe_command}_report.json", report)
    m = report["metrics"] if args.probe_command == "fit" else result.metrics[result.best_layer]
    key = next((k for k in ("val/auroc", "train/auroc", "val/within_auroc") if k in m), None)
    shown = f"{key.split('/')[-1]} {m[key]:.3f}" if key else "no held-out problems"
    print(f"probe saved to {args.out} (layer {probe.meta['layer']}, {shown})")
    return 0


def _take(index, seq: list) -> list:
    return [seq[i] for i in index]


def _fit_ranker(args, feats, cands: Candidates, layer: int):
    """A within-problem ranker (``--objective``) as a calibrated linear probe, with the
    within-problem AUROC on the held-out problems (``val/within_auroc``)."""
    from ucoder.probes import Calibrator, fit_ranker, grouped_split, within_auroc

    labels, groups = cands.labels, cands.groups
    train, val = grouped_split(groups, labels, args.val_fraction, args.seed)
    try:
        ranker = fit_ranker(feats[train], _take(train, labels), _take(train, groups),
                            objective=args.objective, seed=args.seed)
    except ValueError as err:
        raise ProbeCommandError(f"--objective {args.objective}: {err}") from None
    metrics = {"n_train": len(train), "n_val": len(val)}
    if len(val):
        within, per = within_auroc(ranker.score(feats[val]).tolist(), _take(val, labels),
                                   _take(val, groups))
        metrics.update({"val/within_auroc": within, "val/problems_with_both": len(per)})
    calib = Calibrator.fit(ranker.score(feats[train]), _take(train, labels))
    probe = ranker.to_probe(calib, layer=layer, position=args.position,
                            meta={"label_field": args.label_field})
    return probe, metrics


def _score(args: argparse.Namespace) -> int:
    from ucoder.probes import ProbeScorer, load_probe

    cands = read_candidates(args.candidates, args.prompt_field, args.completion_field,
                            args.group_field, None)  # fmt: skip
    probe = load_probe(args.probe)
    name = args.model or probe.meta.get("base_model") or EMBEDDED
    model, tok = _load(args, name)
    scorer = ProbeScorer(model, tok, probe, batch_size=args.batch_size)
    scores = scorer.score(cands.prompts, cands.completions)
    write_jsonl(args.out, [{**r, args.score_field: s} for r, s in zip(cands.rows, scores)])
    print(f"scored {len(scores)} rows -> {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder probe``; user errors are ValueErrors (see ``cli.main``)."""
    return _score(args) if args.probe_command == "score" else _fit(args)
