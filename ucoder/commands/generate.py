"""``ucoder generate``: sample completions for one or more prompts.

    ucoder generate --prompt "Write a Python function that reverses a string." -n 4 --json

With ``--json`` every sample is one JSON line with ``text``, ``mean_logprob``,
``sum_logprob``, ``num_tokens``, ``finish_reason``, ``prompt_index`` and ``sample_index``;
otherwise the samples are printed as readable blocks and the speed goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "sample completions (text, token log-probs) from a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ucoder generate``."""
    from ucoder.commands.options import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--prompt", action="append", required=True,
                        help="a prompt (repeat the option for several)")
    parser.add_argument("-n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="rows (prompt x sample) decoded together")
    parser.add_argument("--plain", action="store_true",
                        help="plain completion: no chat template around the prompt")
    parser.add_argument("--json", action="store_true", help="one JSON object per sample")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder generate``."""
    from ucoder.commands.options import build_backend, model_options

    sampler = build_backend(model_options(args), batch_size=args.batch_size,
                            chat=False if args.plain else None, show_progress=not args.json,
                            seed=args.seed)
    groups = sampler.sample(args.prompt, args.n, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            stop=args.stop, seed=args.seed)
    for group in groups:
        for s in group:
            if args.json:
                print(json.dumps({"prompt_index": s.prompt_index, "sample_index": s.sample_index,
                                  "text": s.text, "mean_logprob": s.mean_logprob,
                                  "sum_logprob": s.sum_logprob, "num_tokens": s.num_tokens,
                                  "finish_reason": s.finish_reason}), flush=True)
            else:
                print(f"--- prompt {s.prompt_index} sample {s.sample_index} "
                      f"({s.num_tokens} tokens, mean log-prob {s.mean_logprob:.3f}, "
                      f"{s.finish_reason})\n{s.text}\n")
    stats = sampler.last_stats
    print(f"{stats['tokens']} tokens in {stats['seconds']:.1f} s "
          f"({stats['tokens_per_s']:.1f} tokens/s)", file=sys.stderr)
    return 0
