"""``ucoder eval``: test-time selection on a benchmark, scored on its hidden tests.

    ucoder eval --model embedded:smollm2-135m-instruct --benchmark humaneval --limit 40 \\
        --samples 8 --select greedy,random,ucoder --out report.json

Writes the report (see :func:`ucoder.evaluation.evaluate`) atomically and prints a table
of policy, pass@1 and solved/problems.
"""

from __future__ import annotations

import argparse
import sys

HELP = "pass@1 of selection policies (greedy, random, ucoder...) on HumanEval or MBPP JSONL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ucoder eval``."""
    from ucoder.evaluation.runner import POLICIES
    from ucoder.models import EMBEDDED_MODEL

    parser.add_argument("--model", default=EMBEDDED_MODEL,
                        help="HF id, local directory or embedded:smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None, help="PEFT adapter directory to apply")
    parser.add_argument("--benchmark", default=None,
                        help="'humaneval' (default) or the path of an MBPP-style JSONL file")
    parser.add_argument("--from-report", default=None, metavar="REPORT.json",
                        help="no model: select again on this report's candidates and "
                             "generated tests (other --select/--signature/thresholds)")
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
    parser.add_argument("--batch-size", type=int, default=64,
                        help="rows (prompt x sample) decoded together")
    parser.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes NF4 weights")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a shared, busy "
                             "machine 1 is much faster: threads spin-wait on each other")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")


def format_table(report: dict) -> str:
    """The short table printed at the end: policy, pass@1, solved/problems."""
    lines = [f"{'policy':<16} {'pass@1':>7}  solved", "-" * 34]
    for name, row in report["policies"].items():
        extra = f"  ({row['fallbacks']} fallbacks)" if row.get("fallbacks") else ""
        lines.append(f"{name:<16} {100 * row['pass@1']:6.1f}%  "
                     f"{row['solved']}/{row['problems']}{extra}")
    if report["pass@k"]:
        ks = ", ".join(f"pass@{k} {100 * v:.1f}%" for k, v in report["pass@k"].items())
        lines.append(f"over all {report['samples']} samples (unbiased): {ks}")
    lines.append(f"{report['benchmark']}, {report['problems']} problems, "
                 f"{report['seconds']:.0f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ucoder.evaluation import check_policies, evaluate, load_benchmark
    from ucoder.evaluation.runner import CONSENSUS_POLICIES

    # Check everything cheap before the model loads.
    previous = None
    try:
        if args.from_report:
            previous = _read_report(args.from_report)
            args.samples = previous.get("samples", 0)
            args.benchmark = args.benchmark or previous.get("benchmark")
        args.benchmark = args.benchmark or "humaneval"
        policies = check_policies(args.select, args.samples)
        problems = load_benchmark(args.benchmark, limit=None if previous else args.limit)
    except ValueError as err:
        print(f"ucoder eval: {err}", file=sys.stderr)
        return 2
    selection = None
    if any(p in CONSENSUS_POLICIES for p in policies):
        from ucoder.ipc.consensus import SelectionConfig

        try:
            if args.tests < (0 if args.prompt_tests else 1):
                raise ValueError(f"--tests={args.tests} is not allowed with consensus "
                                 "policies; use an integer >= 1 (0 only with --prompt-tests)")
            selection = SelectionConfig(signature=args.signature, min_success=args.min_success,
                                        min_cluster=args.min_cluster, seed=args.seed)
        except ValueError as err:
            print(f"ucoder eval: {err}", file=sys.stderr)
            return 2

    if previous is not None:
        from ucoder.evaluation.reselect import reselect

        try:
            report = reselect(previous, problems, policies=policies, selection=selection,
                              seed=args.seed, timeout=args.timeout,
                              prompt_tests=args.prompt_tests)
        except ValueError as err:
            print(f"ucoder eval: {err}", file=sys.stderr)
            return 2
        report["model"], report["from_report"] = previous.get("model"), args.from_report
        return _finish(report, args.out)

    import torch

    from ucoder.generation import Sampler
    from ucoder.models import load_model

    if args.threads < 0:
        print(f"ucoder eval: --threads={args.threads} is not allowed; use 0 (default) or "
              "a positive integer", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, adapter=args.adapter, device=args.device,
                                  dtype=args.dtype, load_in_4bit=args.load_in_4bit)
    sampler = Sampler(model, tokenizer, batch_size=args.batch_size)
    report = evaluate(sampler, problems, samples=args.samples, policies=policies,
                      num_tests=args.tests, selection=selection, seed=args.seed,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, timeout=args.timeout, prompt_tests=args.prompt_tests,
                      benchmark=str(args.benchmark))
    report["model"], report["adapter"] = args.model, args.adapter
    return _finish(report, args.out)


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
