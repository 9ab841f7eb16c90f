"""``ucoder eval``: test-time selection on a benchmark, scored on its hidden tests.

    ucoder eval --model embedded:smollm2-135m-instruct --benchmark humaneval --limit 40 \\
        --samples 8 --select greedy,random,ucoder --out report.json

Writes the report (see :func:`ucoder.evaluation.evaluate`) atomically and prints a table
of policy, pass@1 and solved/problems.
"""

from __future__ import annotations

import argparse

HELP = "pass@1 of selection policies (greedy, random, ucoder...) on HumanEval or MBPP JSONL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ucoder eval``."""
    from ucoder.commands.options import add_model_arguments
    from ucoder.evaluation.selection import POLICIES

    add_model_arguments(parser)
    parser.add_argument("--benchmark", default=None,
                        help="'humaneval' (default) or the path of an MBPP-style JSONL file")
    parser.add_argument("--from-report", default=None, metavar="REPORT.json",
                        help="no model: select again on this report's candidates and "
                             "generated tests (other --select/--signature/thresholds)")
    parser.add_argument("--probe", default=None, metavar="DIR",
                        help="a saved probe (ucoder probe fit): scores every candidate from "
                             "its prompt_text + raw text for the probe and ucoder+probe "
                             "policies; keeps the features beside --out, so --from-report "
                             "--probe OTHER_DIR rescores with no model")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    parser.add_argument("--samples", type=int, default=8,
                        help="sampled candidates per problem (0: greedy only)")
    parser.add_argument("--select", default="greedy,random,ucoder",
                        help=f"comma-separated policies; allowed: {','.join(POLICIES)}")
    parser.add_argument("--tests", type=int, default=8,
                        help="tests the model writes per problem (consensus policies)")
    parser.add_argument("--prompt-tests", action="store_true",
                        help="consensus policies also run the examples the prompt shows "
                             "(docstring examples; MBPP's shown test); --tests 0: only those")
    parser.add_argument("--signature", default="pass", choices=("pass", "output", "dual"),
                        help="execution signature the consensus policies cluster on")
    parser.add_argument("--min-success", type=float, default=0.8,
                        help="execution success a candidate needs to join a cluster")
    parser.add_argument("--min-cluster", type=int, default=2, help="smallest consensus cluster")
    parser.add_argument("--out", required=True, help="report JSON path (written atomically)")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per sandbox job")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="rows (prompt x sample) decoded together")


def format_table(report: dict) -> str:
    """The short table printed at the end: policy, pass@1, solved/problems."""
    lines = [f"{'policy':<16} {'pass@1':>7}  solved", "-" * 34]
    for name, row in report["policies"].items():
        steps = ", ".join(f"{k} {v}" for k, v in row.get("fallback_steps", {}).items())
        extra = (f"  ({row['fallbacks']} fallbacks{': ' + steps if steps else ''})"
                 if row.get("fallbacks") else "")
        lines.append(f"{name:<16} {100 * row['pass@1']:6.1f}%  "
                     f"{row['solved']}/{row['problems']}{extra}")
    if report["pass@k"]:
        ks = ", ".join(f"pass@{k} {100 * v:.1f}%" for k, v in report["pass@k"].items())
        lines.append(f"over all {report['samples']} samples (unbiased): {ks}")
    lines.append(f"{report['benchmark']}, {report['problems']} problems, "
                 f"{report['seconds']:.0f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder eval``; bad options raise ValueError before a model loads."""
    from ucoder.commands.options import build_backend, model_options
    from ucoder.evaluation import check_policies, evaluate, load_benchmark

    opts = model_options(args)
    previous = _read_report(args.from_report) if args.from_report else None
    if previous is not None:
        args.samples = previous.get("samples", 0)
        args.benchmark = args.benchmark or previous.get("benchmark")
    args.benchmark = args.benchmark or "humaneval"
    policies = check_policies(args.select, args.samples)
    problems = load_benchmark(args.benchmark, limit=None if previous else args.limit)
    selection = _selection(args, policies)
    if previous is not None:
        from ucoder.evaluation.reselect import reselect

        if args.probe:
            _rescore(previous, args.probe, args.from_report)

        report = reselect(previous, problems, policies=policies, selection=selection,
                          seed=args.seed, timeout=args.timeout, prompt_tests=args.prompt_tests)
        report["model"], report["from_report"] = previous.get("model"), args.from_report
        report.update({k: previous[k] for k in ("probe", "probe_features") if k in previous})
        return _finish(report, args.out)
    if args.probe and opts.backend != "hf":
        raise ValueError(f"--probe={args.probe!r} reads hidden states, which needs "
                         f"--backend=hf (got --backend={opts.backend})")
    sampler = build_backend(opts, batch_size=args.batch_size, seed=args.seed)
    scorer = _scorer(sampler, args.probe, args.out) if args.probe else None
    report = evaluate(sampler, problems, samples=args.samples, policies=policies,
                      num_tests=args.tests, selection=selection, seed=args.seed,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, timeout=args.timeout, prompt_tests=args.prompt_tests,
                      benchmark=str(args.benchmark), candidate_scorer=scorer)
    if scorer is not None:
        report["probe"], report["probe_features"] = scorer.info, str(scorer.path)
    report["model"], report["adapter"] = opts.model, opts.adapter
    report["backend"] = opts.backend
    return _finish(report, args.out)


def _selection(args: argparse.Namespace, policies: list[str]):
    """The SelectionConfig of the registry policies (None when only plain ones run)."""
    from ucoder.evaluation.selection import CONSENSUS_POLICIES, needs_tests
    from ucoder.ipc.consensus import SelectionConfig

    if not any(p in CONSENSUS_POLICIES for p in policies):
        return None
    if needs_tests(policies) and args.tests < (0 if args.prompt_tests else 1):
        raise ValueError(f"--tests={args.tests} is not allowed with consensus policies; use "
                         "an integer >= 1 (0 only with --prompt-tests)")
    return SelectionConfig(signature=args.signature, min_success=args.min_success,
                           min_cluster=args.min_cluster, seed=args.seed)


def _scorer(sampler, probe_dir: str, out: str):
    """The candidate scorer of ``--probe`` (features kept beside ``out``)."""
    from ucoder.evaluation.probe_scores import features_path, probe_scorer
    from ucoder.probes import load_probe

    probe = load_probe(probe_dir, sampler.model)
    scorer = probe_scorer(sampler.model, sampler.tokenizer, probe, features_path(out))
    scorer.path = features_path(out)
    scorer.info = {k: probe.meta.get(k) for k in ("path", "kind", "layer", "position",
                                                  "base_model")}
    return scorer


def _rescore(report: dict, probe_dir: str, report_path: str) -> None:
    """``--from-report --probe``: the probe's scores from the kept features, no model."""
    from ucoder.evaluation.probe_scores import apply_scores, cached_features, features_path
    from ucoder.probes import load_probe

    path = report.get("probe_features") or features_path(report_path)
    probe = load_probe(probe_dir)
    apply_scores(report, probe, cached_features(report, probe, path))
    report["probe_features"] = str(path)


def _finish(report: dict, out: str) -> int:
    from ucoder.jsonl import write_json

    write_json(out, report)
    print(format_table(report))
    print(f"report: {out}")
    return 0


def _read_report(path: str) -> dict:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--from-report={path!r} could not be read: {err}") from err
    if not isinstance(report, dict) or "per_problem" not in report:
        raise ValueError(f"--from-report={path!r} is not a report written by ucoder eval")
    return report
