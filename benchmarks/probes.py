"""Benchmark: do probes trained on consensus labels pick better than log-prob, and does
``ucoder+probe`` select better than ``ucoder``? (HumanEval, embedded model.)

Stages, each cached under ``--out`` so a killed run resumes and a rerun only re-scores:
candidates (sampled, written after every chunk of problems), greedy completions, labels
(sandbox: hidden tests, which are only ever used to score, and the behaviour on the
prompt's example inputs, which gives the consensus labels), hidden-state features
(every ``--layer-stride``-th layer at two token positions, one file per chunk of rows),
then cross-fitted probes and the selection policies (benchmarks/probe_select.py).

    nice .venv/bin/python benchmarks/probes.py --problems 164 --samples 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.probe_candidates import generate_candidates, generate_greedy  # noqa: E402
from benchmarks.probe_labels import label_rows  # noqa: E402
from benchmarks.probe_report import report  # noqa: E402
from benchmarks.probe_select import ALL_METHODS, METHODS, consensus_labels, cross_fit  # noqa: E402
from ucoder.jsonl import read_jsonl, write_json, write_jsonl  # noqa: E402

POSITIONS = ("last_completion", "mean_completion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=164, help="first N HumanEval problems")
    ap.add_argument("--samples", type=int, default=8, help="candidates per problem")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--chunk-problems", type=int, default=16,
                    help="problems per sampling call (cached after each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-after", choices=["generate", "label", "features", "score"],
                    default="score")
    ap.add_argument("--layer-stride", type=int, default=3, help="sweep every k-th layer")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated, from {','.join(ALL_METHODS)}")
    ap.add_argument("--extract-batch", type=int, default=8)
    ap.add_argument("--chunk-rows", type=int, default=128, help="rows per features file")
    ap.add_argument("--logprob-feature", action="store_true",
                    help="also sweep each position with the mean log-prob appended as one "
                         "more feature (report: probes_report_<n>_logprob.json)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise SystemExit(f"--methods={args.methods!r}: allowed {', '.join(ALL_METHODS)}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = generate_candidates(args, args.out / "humaneval_candidates.jsonl")
    print(f"{len(rows)} candidates for {len({r['task_id'] for r in rows})} problems")
    greedy_rows = generate_greedy(args, args.out / "humaneval_greedy.jsonl")
    if args.stop_after == "generate":
        return 0
    rows = labelled(rows, args.out / "humaneval_labelled.jsonl")
    greedy = {r["task_id"]: r["passed"]
              for r in labelled(greedy_rows, args.out / "humaneval_greedy_labelled.jsonl")}
    if args.stop_after == "label":
        return 0
    feats = features(args, rows)
    if args.stop_after == "features":
        return 0
    if args.logprob_feature:
        feats |= with_logprob(feats, rows)
    cons = consensus_labels(rows)
    groups = [r["task_id"] for r in rows]
    t0 = time.perf_counter()
    fitted = cross_fit(feats, cons, groups, k=args.folds, seed=args.seed, methods=methods)
    result = report(rows, cons, fitted, greedy, seed=args.seed)
    layers_file = args.out / f"features_s{args.layer_stride}" / "layers.json"
    result |= {"settings": {k: str(v) for k, v in vars(args).items()},
               "layers": json.loads(layers_file.read_text()) if layers_file.exists() else None,
               "score_seconds": round(time.perf_counter() - t0, 1)}
    suffix = "_logprob" if args.logprob_feature else ""
    write_json(args.out / f"probes_report_{len(greedy)}{suffix}.json", result)
    print(result["last_line"])
    return 0


def _rows_key(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps([(r["task_id"], r["completion"]) for r in rows])
                          .encode()).hexdigest()[:16]  # fmt: skip


def labelled(rows: list[dict], path: Path) -> list[dict]:
    """Rows with hidden-test and example-input results (cached; redone if rows changed)."""
    key = _rows_key(rows)
    if path.exists():
        cached = read_jsonl(path)
        if cached and cached[0].get("rows_key") == key:
            return cached
    t0 = time.perf_counter()
    out = [{**r, "rows_key": key} for r in label_rows(rows)]
    write_jsonl(path, out)
    print(f"labelled {len(out)} rows in the sandbox in {time.perf_counter() - t0:.0f}s")
    return out


def features(args: argparse.Namespace, rows: list[dict]) -> dict[str, torch.Tensor]:
    """``{position: [N, layers, H]}``, extracted in chunks of rows, each cached on disk."""
    from safetensors.torch import load_file, save_file

    folder = args.out / f"features_s{args.layer_stride}"
    folder.mkdir(exist_ok=True)
    parts, model = [], None
    for start in range(0, len(rows), args.chunk_rows):
        chunk = rows[start : start + args.chunk_rows]
        path = folder / f"{_rows_key(chunk)}.safetensors"
        if not path.exists():
            model = model or _load(args.model)
            t0 = time.perf_counter()
            save_file(_extract(model, chunk, args), str(path))
            print(f"features rows {start}..{start + len(chunk)} in "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
        parts.append(load_file(str(path)))
    return {p: torch.cat([part[p] for part in parts]) for p in POSITIONS}


def with_logprob(feats: dict[str, torch.Tensor], rows: list[dict]) -> dict[str, torch.Tensor]:
    """``{position+logprob: features with the row's mean log-prob as one more column}``:
    a feature set the sweep may choose, so a probe can build on fluency, not only
    compete with it."""
    lp = torch.tensor([float(r["mean_logprob"]) for r in rows])
    return {f"{p}+logprob": torch.cat([x, lp[:, None, None].expand(-1, x.shape[1], 1)], dim=-1)
            for p, x in feats.items()}


def _load(name: str):
    from ucoder.models import load_model

    return load_model(name, device="cpu")


def _extract(model_tok, chunk: list[dict], args) -> dict[str, torch.Tensor]:
    from ucoder.probes import extract_positions, num_hidden_layers

    model, tok = model_tok
    n = num_hidden_layers(model)
    layers = sorted(set(range(0, n + 1, args.layer_stride)) | {n})
    # The sweep reports a layer's index in this list; the list itself is kept beside.
    (args.out / f"features_s{args.layer_stride}" / "layers.json").write_text(json.dumps(layers))
    out = extract_positions(model, tok, [r["prompt_text"] for r in chunk],
                            [r["completion"] for r in chunk], layers=layers,
                            positions=POSITIONS, batch_size=args.extract_batch)
    return {p: t.contiguous() for p, t in out.items()}


if __name__ == "__main__":
    sys.exit(main())
