"""Benchmark: do hidden-state probes predict HumanEval correctness better than log-prob?

Stages (each cached under ``benchmarks/out/`` so reruns skip it): generate candidates
with the embedded model, label them with HumanEval's real tests, label them again by
execution consensus on the docstring example inputs (no ground truth), extract hidden
states of every layer, then problem-grouped 5-fold cross-validation.

    .venv/bin/python benchmarks/probes.py --problems 40 --samples 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.probe_candidates import generate_candidates  # noqa: E402
from benchmarks.probe_cv import auroc, cross_validate  # noqa: E402
from benchmarks.probe_labels import label_rows  # noqa: E402
from ucoder.jsonl import read_jsonl, write_json, write_jsonl  # noqa: E402
from ucoder.probes import extract_features, load_features, num_hidden_layers, save_features  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=40, help="first N HumanEval problems")
    ap.add_argument("--samples", type=int, default=8, help="candidates per problem")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-after", choices=["generate", "label", "features", "cv"], default="cv")
    ap.add_argument("--position", default="last_completion",
                    choices=["last_completion", "last_prompt", "mean_completion"])
    ap.add_argument("--layer-stride", type=int, default=3, help="sweep every k-th layer")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--extract-batch", type=int, default=8)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = generate_candidates(args, args.out / "humaneval_candidates.jsonl")
    print(f"{len(rows)} candidates for {len({r['task_id'] for r in rows})} problems")
    if args.stop_after == "generate":
        return 0
    rows = labelled(rows, args.out / "humaneval_labelled.jsonl")
    gold = np.array([r["passed"] for r in rows])
    cons = np.array([r["consensus"] for r in rows])
    groups = np.array([r["task_id"] for r in rows])
    print(f"real tests: {int(gold.sum())}/{len(rows)} correct in "
          f"{len(set(groups[gold]))}/{len(set(groups))} problems; consensus labels: "
          f"{int(cons.sum())} positive, agreement with real {float((cons == gold).mean()):.3f}, "
          f"AUROC of consensus membership vs real {auroc(cons.astype(float), gold):.3f}")
    if args.stop_after == "label":
        return 0
    feats, layers = features(args, rows)
    if args.stop_after == "features":
        return 0
    baselines = {
        "logprob": np.array([r["mean_logprob"] for r in rows]),
        "length": np.array([float(r["num_tokens"]) for r in rows]),
    }
    common = dict(k=args.folds, seed=args.seed, max_epochs=args.max_epochs)
    t0 = time.perf_counter()
    print("== probes trained on real test results ==")
    real = cross_validate(feats, layers, gold, gold, groups, baselines, **common)
    print("== probes trained on consensus labels only (scored against real results) ==")
    consensus = cross_validate(feats, layers, gold, cons, groups, baselines, **common)
    report = {"settings": vars(args) | {"out": str(args.out)}, "machine": machine(),
              "n_rows": len(rows), "n_correct": int(gold.sum()), "real": real,
              "consensus": consensus, "cv_seconds": time.perf_counter() - t0}
    write_json(args.out / f"probes_report_{args.position}.json", report)
    print_tables(real, consensus)
    print(f"probe_auroc={real['probe']['fold_mean_std'][0]:.3f} "
          f"logprob_auroc={real['logprob']['fold_mean_std'][0]:.3f}")
    return 0


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def labelled(rows: list[dict], path: Path) -> list[dict]:
    """Rows with real-test and consensus labels (cached; relabelled if the rows changed)."""
    key = hashlib.sha256(json.dumps([(r["task_id"], r["completion"]) for r in rows])
                         .encode()).hexdigest()[:16]  # fmt: skip
    if path.exists():
        cached = read_jsonl(path)
        if cached and cached[0].get("rows_key") == key:
            return cached
    t0 = time.perf_counter()
    out = [{**r, "rows_key": key} for r in label_rows(rows)]
    write_jsonl(path, out)
    print(f"labelled {len(out)} candidates in the sandbox in {time.perf_counter() - t0:.0f}s")
    return out


def features(args: argparse.Namespace, rows: list[dict]) -> tuple[torch.Tensor, list[int]]:
    """Hidden states of every ``layer_stride``-th layer (and the last), cached."""
    path = args.out / f"features_{args.position}_s{args.layer_stride}.safetensors"
    key = rows[0]["rows_key"]
    if path.exists():
        stored = load_features(path)
        if stored.meta.get("rows_key") == key:
            return stored.features, stored.meta["layers"]
    from ucoder.models import load_model

    model, tok = load_model(args.model, device="cpu")
    n = num_hidden_layers(model)
    layers = sorted(set(range(0, n + 1, args.layer_stride)) | {n})
    t0 = time.perf_counter()
    feats = extract_features(model, tok, [r["prompt_text"] for r in rows],
                             [r["completion"] for r in rows], layers=layers,
                             position=args.position, batch_size=args.extract_batch)  # fmt: skip
    print(f"extracted {len(layers)} layers for {len(rows)} rows in "
          f"{time.perf_counter() - t0:.0f}s")
    save_features(path, feats, [r["passed"] for r in rows], [r["task_id"] for r in rows],
                  {"rows_key": key, "layers": layers, "position": args.position})  # fmt: skip
    return feats, layers


def _fmt(pair) -> str:
    m, s = pair
    return "  nan" if math.isnan(m) else f"{m:.3f} ± {s:.3f}"


def print_tables(real: dict, consensus: dict) -> None:
    print("\nAUROC per layer (mean over test folds), probes trained on real labels:")
    print("layer  linear          mlp")
    for layer in real["layers"]:
        print(f"{layer:>5}  {_fmt(real['linear']['per_layer'][layer]):<14}  "
              f"{_fmt(real['mlp']['per_layer'][layer])}")
    print("\nscore                 fold mean ± std   pooled OOF  within-problem")
    for title, res, names in [("real", real, ["probe", "linear", "mlp", "logprob", "length"]),
                              ("consensus", consensus, ["probe", "linear", "mlp"])]:
        for name in names:
            r = res[name]
            print(f"{title + ':' + name:<21} {_fmt(r['fold_mean_std']):<17} "
                  f"{r['pooled_oof']:.3f}       {r['within_problem']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
