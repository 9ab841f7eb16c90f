"""Sampling speed: ucoder's Sampler vs plain ``model.generate`` one prompt at a time
(what a user writes first) and vs llama.cpp on the same GGUF (when ``llama_cpp`` is
importable), in the same run, on the embedded model.

    .venv/bin/python benchmarks/generation.py [--prompts 8] [--samples 8] [--batch-size 32 64]

The workload is the one IPC runs: several prompts x n samples each, temperature 0.8,
top-p 0.95. Tokens/s counts generated tokens (EOS excluded). The naive baseline and
llama.cpp run a subset of the rows (they are one stream) and are compared as rates.
Last line: ``sampler_vs_naive=<ratio> sampler_vs_llamacpp=<ratio or n/a>``.
"""

from __future__ import annotations

import argparse
import time

import torch

from ucoder.generation import Sampler
from ucoder.models import EMBEDDED_MODEL, embedded_gguf, load_model

PROMPTS = [
    "Write a Python function `is_palindrome(s: str) -> bool` that ignores case and spaces.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function `merge_sorted(a, b)` that merges two sorted lists.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function `flatten(xs)` that flattens a nested list of lists.",
    "Write a Python function that returns the prime numbers below n (sieve).",
    "Write a Python function `word_counts(text)` returning a dict of word frequencies.",
    "Write a Python function that checks whether brackets in a string are balanced.",
]


def sampler_rate(model, tok, prompts, n, max_new, batch_size) -> float:
    sampler = Sampler(model, tok, batch_size=batch_size, show_progress=False)
    sampler.sample(prompts[:1], 1, max_new_tokens=4, seed=0)  # warm-up
    sampler.sample(prompts, n, max_new_tokens=max_new, temperature=0.8, top_p=0.95, seed=0)
    return sampler.last_stats["tokens_per_s"]


def naive_rate(model, tok, prompts, rows, max_new) -> float:
    """One prompt per ``model.generate`` call, sampling like the Sampler does."""
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    produced, seconds = 0, 0.0
    torch.manual_seed(0)
    for k in range(rows):
        ids = tok(texts[k % len(texts)], return_tensors="pt", add_special_tokens=False)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, do_sample=True, temperature=0.8, top_p=0.95,
                                 max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
        seconds += time.perf_counter() - start
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        produced += len([t for t in new if t != tok.eos_token_id])
    return produced / seconds


def llamacpp_rate(prompts, rows, max_new, threads) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(embedded_gguf("smollm2-135m-instruct")), n_ctx=1024,
                n_threads=threads, verbose=False, seed=0)
    produced, seconds = 0, 0.0
    for k in range(rows):
        start = time.perf_counter()
        out = llm.create_chat_completion([{"role": "user", "content": prompts[k % len(prompts)]}],
                                         temperature=0.8, top_p=0.95, max_tokens=max_new)
        seconds += time.perf_counter() - start
        produced += out["usage"]["completion_tokens"]
    return produced / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--naive-rows", type=int, default=6, help="rows for the one-stream tools")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompts = PROMPTS[:args.prompts]
    model, tok = load_model(EMBEDDED_MODEL)
    print(f"model={EMBEDDED_MODEL} dtype={model.dtype} threads={args.threads} "
          f"rows={len(prompts)}x{args.samples} max_new_tokens={args.max_new_tokens}")

    naive = naive_rate(model, tok, prompts, args.naive_rows, args.max_new_tokens)
    print(f"naive model.generate, one prompt at a time: {naive:7.1f} tokens/s")
    rates = {}
    for bs in args.batch_size:
        rates[bs] = sampler_rate(model, tok, prompts, args.samples, args.max_new_tokens, bs)
        print(f"Sampler batch_size={bs:<3}: {rates[bs]:7.1f} tokens/s")
    best_bs = max(rates, key=rates.get)
    llama = llamacpp_rate(prompts, args.naive_rows, args.max_new_tokens, args.threads)
    print("llama.cpp single stream: " + ("not installed" if llama is None
                                        else f"{llama:7.1f} tokens/s"))
    vs_llama = "n/a" if llama is None else f"{rates[best_bs] / llama:.2f}"
    print(f"sampler_vs_naive={rates[best_bs] / naive:.2f} sampler_vs_llamacpp={vs_llama}")


if __name__ == "__main__":
    main()
