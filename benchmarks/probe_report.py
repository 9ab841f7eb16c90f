"""The numbers of benchmarks/probes.py, with intervals over problems.

Everything here reads the hidden-test results (``passed``) only to score what the
consensus-trained probes and the policies chose.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.probe_cv import auroc
from benchmarks.probe_select import by_problem, selections
from ucoder.evaluation.metrics import bootstrap_ci, mcnemar_exact, paired_bootstrap_diff
from ucoder.probes import within_auroc

POLICIES = ("greedy", "max_logprob", "ucoder", "probe", "ucoder+probe")


def grouped_auroc_ci(scores, labels, groups, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Pooled AUROC and its percentile interval, resampling whole problems."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    idx = list(by_problem([{"task_id": g} for g in groups]).values())
    rng, values = np.random.default_rng(seed), []
    for _ in range(n_boot):
        rows = np.concatenate([idx[k] for k in rng.integers(0, len(idx), len(idx))])
        if labels[rows].any() and not labels[rows].all():
            values.append(auroc(scores[rows], labels[rows]))
    low, high = np.quantile(values, [0.025, 0.975]) if values else (math.nan, math.nan)
    return auroc(scores, labels), float(low), float(high)


def _within(scores, labels, groups) -> dict:
    mean, per = within_auroc(scores, labels, groups)
    low, high = bootstrap_ci(per) if per else (math.nan, math.nan)
    return {"mean": mean, "ci": [low, high], "problems": len(per), "per_problem": per}


def ranking_table(rows, fitted: dict, methods) -> dict:
    """Per score (each method's cross-fitted probe, log-prob): across/within AUROC."""
    real = np.array([r["passed"] for r in rows])
    groups = [r["task_id"] for r in rows]
    scores = {m: fitted[m]["scores"] for m in methods}
    scores["logprob"] = np.array([r["mean_logprob"] for r in rows])
    out = {}
    for name, s in scores.items():
        across = grouped_auroc_ci(s, real, groups)
        out[name] = {"across": {"auroc": across[0], "ci": list(across[1:])},
                     "within": _within(s, real, groups)}
    lp_per = out["logprob"]["within"]["per_problem"]
    for name in methods:
        out[name]["inner_consensus_within"] = fitted[name]["inner_mean"]
        out[name]["chosen"] = fitted[name]["chosen"]
        # Same problems in the same order (within_auroc walks the groups in row order).
        diff = paired_bootstrap_diff(out[name]["within"]["per_problem"], lp_per)
        out[name]["within_minus_logprob"] = {"diff": diff[0], "ci": list(diff[1:])}
    return out


def selection_table(rows, scores, greedy: dict, seed: int) -> dict:
    """pass@1 with intervals per policy, fallbacks, McNemar of ucoder+probe vs ucoder."""
    sel = selections(rows, scores, greedy, POLICIES, seed)
    out = {}
    for name, res in sel.items():
        o = res["outcomes"]
        out[name] = {"pass@1": float(np.mean(o)), "ci": list(bootstrap_ci(o)),
                     "solved": int(sum(o)), "fallbacks": res["fallbacks"]}
    a, b = sel["ucoder+probe"]["outcomes"], sel["ucoder"]["outcomes"]
    out["ucoder+probe_vs_ucoder"] = {"mcnemar_p": mcnemar_exact(a, b),
                                     "diff": list(paired_bootstrap_diff(a, b)),
                                     "discordant": [int(sum(x > y for x, y in zip(a, b))),
                                                    int(sum(y > x for x, y in zip(a, b)))]}
    return out


def report(rows: list[dict], cons: np.ndarray, fitted: dict, greedy: dict, seed: int = 0
           ) -> dict:
    """The whole benchmark report and its last line (see the module docstring)."""
    methods = [m for m in fitted if m != "probe"]
    real = np.array([r["passed"] for r in rows])
    groups = [r["task_id"] for r in rows]
    ranking = ranking_table(rows, fitted, methods)
    per_method = {m: selection_table(rows, fitted[m]["scores"], greedy, seed)
                  for m in methods}
    chosen = fitted["probe"]
    main = per_method[chosen]
    both = sum(1 for idx in by_problem(rows).values()
               if real[idx].any() and not real[idx].all())
    labels = {"rows": len(rows), "real_positive": int(real.sum()),
              "consensus_positive": int(cons.sum()),
              "agreement": float((cons == real).mean()),
              "consensus_vs_real_auroc": auroc(cons.astype(float), real),
              "problems_with_both_real_labels": both}
    line = (f"probe_within_auroc={ranking[chosen]['within']['mean']:.3f} "
            f"logprob_within_auroc={ranking['logprob']['within']['mean']:.3f} "
            f"ucoder_probe_pass1={main['ucoder+probe']['pass@1']:.3f} "
            f"ucoder_pass1={main['ucoder']['pass@1']:.3f} "
            f"mcnemar_p={main['ucoder+probe_vs_ucoder']['mcnemar_p']:.3g} "
            f"problems={len(set(groups))}")
    print_tables(labels, ranking, per_method, chosen)
    return {"labels": labels, "ranking": ranking, "selection": per_method,
            "probe_method": chosen, "last_line": line}


def _ci(v: float, ci) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_tables(labels: dict, ranking: dict, per_method: dict, chosen: str) -> None:
    print(f"labels: {labels}")
    print(f"\n{'score':<16} {'across AUROC [95% CI]':<26} {'within AUROC [95% CI]':<26} "
          f"{'within - logprob [95% CI]':<27} problems  inner(consensus)")
    for name, r in ranking.items():
        w, d = r["within"], r.get("within_minus_logprob", {"diff": 0.0, "ci": [0.0, 0.0]})
        print(f"{name:<16} {_ci(r['across']['auroc'], r['across']['ci']):<26} "
              f"{_ci(w['mean'], w['ci']):<26} {_ci(d['diff'], d['ci']):<27} "
              f"{w['problems']:>8}  {r.get('inner_consensus_within', math.nan):.3f}")
    for method, table in per_method.items():
        star = " (the probe)" if method == chosen else ""
        print(f"\nselection with the {method} probe{star}:")
        for name in POLICIES:
            t = table[name]
            print(f"  {name:<14} pass@1 {_ci(t['pass@1'], t['ci'])}  solved {t['solved']}  "
                  f"fallbacks {t['fallbacks']}")
        cmp = table["ucoder+probe_vs_ucoder"]
        d = cmp["diff"]
        print(f"  ucoder+probe - ucoder: {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}], "
              f"McNemar p={cmp['mcnemar_p']:.3g}, discordant {cmp['discordant']}")
