"""Sampling speed: the Sampler against the baselines a user would pick, and the roofline.

    .venv/bin/python benchmarks/generation.py [--prompts 32] [--samples 8] [--batch-size 256]
        [--repeats 3] [--threads 2] [--bf16] [--fast] [--unshared]

All in one run, on the embedded model, on the IPC candidates workload (chat template,
answer prefix, the solution stage's stop strings, T=0.8, top-p 0.95; by default 32
prompts x 8 samples; `before` and `fast` in batches of 64):

* ``Sampler`` (its defaults: ``decode="continuous"``, finished rows refilled from pending
  ones, up to 256 rows at once within a KV-cache budget, fp32); ``before`` is
  ``Sampler(decode="reference", batch_size=64)``, the Sampler of the day issue 15 was
  filed (growing ``DynamicCache``, full ``log_softmax``, in-order row compaction, 64 rows);
  ``--fast`` adds ``Sampler(decode="fast")`` (batch by batch on today's cache);
  ``--unshared`` adds ``Sampler(share_prompts=False)`` (each row a copy of its prompt's
  KV cache, as before shared-prompt attention);
* batched ``model.generate(num_return_sequences=n, stop_strings=..., top_k=256)`` on the
  same rows in one batch (what a user writes with transformers);
* ``model.generate`` one prompt at a time (naive, a subset of rows, compared as a rate);
* with ``--bf16``, the opt-in ``Sampler(dtype="bfloat16")`` (different numerics);
* the roofline: fp32 matmul GFLOP/s of the model's own layer shapes at the batch used
  (output layer included) and of a large GEMM, on the Sampler's threads; and the output
  layer as the Sampler decodes it (vocabulary chunks into a reused buffer), by chunk.

Runners take turns (one repeat of each, then the next repeat), and each figure is the
median over ``--repeats``. Rates are tokens per CPU-second of this process (steady on a
shared machine with ``--threads 1``; wall-clock rates are printed beside them). Tokens
count generated tokens up to the stop string or EOS (EOS excluded). Last line:
``sampler_vs_naive=… sampler_vs_hf_batched=… sampler_vs_before=… sampler_vs_roofline=…``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ucoder.generation import Sampler
from ucoder.ipc.prompts import SOLUTION_PREFIX, SOLUTION_STOP
from ucoder.models import EMBEDDED_MODEL, load_model
from ucoder.output_head import CHUNK, ChunkedHead

PROMPTS = [
    "Write a Python function `is_palindrome(s: str) -> bool` that ignores case and spaces.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function `merge_sorted(a, b)` that merges two sorted lists.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function `flatten(xs)` that flattens a nested list of lists.",
    "Write a Python function that returns the prime numbers below n (sieve).",
    "Write a Python function `word_counts(text)` returning a dict of word frequencies.",
    "Write a Python function that checks whether brackets in a string are balanced.",
    "Write a Python function `rotate(xs, k)` that rotates a list right by k places.",
    "Write a Python function that returns the greatest common divisor of two integers.",
    "Write a Python function `chunks(xs, n)` that splits a list into pieces of size n.",
    "Write a Python function that reverses the order of words in a sentence.",
    "Write a Python function `is_anagram(a, b)` that ignores case.",
    "Write a Python function that returns the second largest number in a list.",
    "Write a Python function `run_length(s)` that run-length encodes a string.",
    "Write a Python function that converts a Roman numeral to an integer.",
    "Write a Python function `transpose(m)` for a matrix given as a list of rows.",
    "Write a Python function that removes duplicates from a list, keeping the order.",
    "Write a Python function `binary_search(xs, x)` returning the index or -1.",
    "Write a Python function that capitalises the first letter of every word.",
    "Write a Python function `digits_sum(n)` that sums the decimal digits of n.",
    "Write a Python function that returns the longest common prefix of a list of strings.",
    "Write a Python function `pairs_with_sum(xs, t)` listing index pairs that sum to t.",
    "Write a Python function that checks whether a year is a leap year.",
    "Write a Python function `celsius_to_fahrenheit(c)` rounded to one decimal.",
    "Write a Python function that returns the running maximum of a list.",
    "Write a Python function `count_words(text, word)` counting whole-word matches.",
    "Write a Python function that returns the factorial of n without recursion.",
    "Write a Python function `interleave(a, b)` alternating the items of two lists.",
    "Write a Python function that returns True when a number is a perfect square.",
    "Write a Python function `caesar(s, k)` shifting letters by k, keeping case.",
    "Write a Python function that returns the indices of the minimum value in a list.",
]
SAMPLING = {"temperature": 0.8, "top_p": 0.95}
STOP = list(SOLUTION_STOP)  # emptied by --no-stop


def gemm_gflops(m: int, k: int, n: int, seconds: float = 0.3) -> float:
    """fp32 ``F.linear`` rate for an (m x k) input and an (n x k) weight, in GFLOP per
    CPU-second (the same clock as the runners', see :class:`Clock`)."""
    x, w = torch.randn(m, k), torch.randn(n, k)
    torch.nn.functional.linear(x, w)  # warm-up
    reps, start = 0, time.process_time()
    while time.process_time() - start < seconds or reps < 3:
        torch.nn.functional.linear(x, w)
        reps += 1
    return 2 * m * k * n * reps / (time.process_time() - start) / 1e9


def head_gflops(m: int, k: int, n: int, chunk: int, seconds: float = 0.3) -> float:
    """Like :func:`gemm_gflops` for the output layer as the Sampler computes it while
    decoding: ``chunk`` vocabulary columns per product, into one reused buffer."""
    head = torch.nn.Linear(k, n, bias=False)
    chunked, x = ChunkedHead(head, chunk=chunk), torch.randn(m, 1, k)
    with torch.no_grad(), chunked.reusing():
        chunked(x)  # warm-up, and the buffer
        reps, start = 0, time.process_time()
        while time.process_time() - start < seconds or reps < 3:
            chunked(x)
            reps += 1
    return 2 * m * k * n * reps / (time.process_time() - start) / 1e9


def layer_shapes(config) -> list[tuple[str, int, int, int]]:
    """(name, k, n, count per token) of every matmul of a Llama-style decoder."""
    h, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    q = config.num_attention_heads * head_dim
    layers = config.num_hidden_layers
    return [("q_proj", h, q, layers), ("k_proj+v_proj", h, kv, 2 * layers),
            ("o_proj", q, h, layers), ("gate_proj+up_proj", h, inter, 2 * layers),
            ("down_proj", inter, h, layers), ("lm_head", h, config.vocab_size, 1)]


def roofline(config, batch: int) -> dict[str, float]:
    """Tokens/s ceilings of one decoding step at ``batch`` rows (fp32, current threads)."""
    peak = statistics.median(gemm_gflops(2048, 2048, 2048) for _ in range(3))
    print(f"large GEMM 2048^3 fp32: {peak:6.1f} GFLOP/s (practical peak)")
    step_s, flops = 0.0, 0
    for name, k, n, count in layer_shapes(config):
        rate = gemm_gflops(batch, k, n)
        step_s += count * 2 * batch * k * n / (rate * 1e9)
        flops += count * 2 * k * n
        print(f"  {name:<18} {batch}x{k}x{n:<6} x{count:<3} {rate:6.1f} GFLOP/s")
    k, n = config.hidden_size, config.vocab_size
    rates = "  ".join(f"{c}: {head_gflops(batch, k, n, c):5.1f}" for c in (256, CHUNK, 2048, n))
    print(f"  lm_head as decoded (vocabulary columns per product: GFLOP/s) {rates}")
    shapes = batch / step_s
    print(f"matmul FLOPs/token {flops / 1e6:.0f} M; ceiling from the model's shapes "
          f"{shapes:6.1f} tokens/s ({flops * shapes / 1e9:.1f} GFLOP/s), from the large-GEMM "
          f"rate {peak * 1e9 / flops:6.1f} tokens/s")
    return {"flops_per_token": flops, "shapes": shapes, "peak": peak * 1e9 / flops}


class Clock:
    """Wall and CPU seconds of the timed regions, and the tokens they produced.

    On a machine shared with other jobs, the wall clock counts time the runner waited
    for a core; CPU time (of this process) does not, so tokens per CPU-second is the
    steadier figure with one thread, where CPU time is the work done.
    """

    def __init__(self):
        self.tokens, self.wall, self.cpu = 0, 0.0, 0.0
        self.token_ids: list[list[int]] = []  # the Sampler runners' samples, in order

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def sampler_run(model, tok, prompts, args, **options) -> Clock:
    options.setdefault("batch_size", args.batch_size)
    sampler = Sampler(model, tok, show_progress=False, **options)
    with Clock() as clock:
        groups = sampler.sample(prompts, args.samples, max_new_tokens=args.max_new_tokens,
                                seed=0, stop=list(STOP), prefix=SOLUTION_PREFIX, **SAMPLING)
    clock.tokens = sampler.last_stats["tokens"]
    clock.token_ids = [s.token_ids for group in groups for s in group]
    return clock


def rows_at_once(model, tok, prompts, args) -> int:
    """The rows the Sampler decodes together on this workload (``batch_size`` capped by
    its KV-cache budget), which batched ``generate`` gets too."""
    sampler = Sampler(model, tok, batch_size=args.batch_size, show_progress=False)
    encoded = [sampler.encode_prompt(sampler.format_prompt(p, SOLUTION_PREFIX)) for p in prompts]
    return min(sampler._rows_at_once(encoded, args.max_new_tokens), len(prompts) * args.samples)


def _chat_texts(tok, prompts) -> list[str]:
    return [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) + SOLUTION_PREFIX
            for p in prompts]


def _generated(tok, out, width: int) -> int:
    """Tokens each row generated, up to (not counting) EOS or padding."""
    ends = {tok.eos_token_id, tok.pad_token_id}
    total = 0
    for row in out[:, width:].tolist():
        total += next((i for i, t in enumerate(row) if t in ends), len(row))
    return total


def hf_batched_run(model, tok, prompts, args) -> Clock:
    """All rows in ``model.generate`` calls of ``batch_size`` rows (n per prompt)."""
    tok.padding_side = "left"
    per_call = max(1, args.batch_size // args.samples)
    texts, clock = _chat_texts(tok, prompts), Clock()
    torch.manual_seed(0)
    for i in range(0, len(texts), per_call):
        enc = tok(texts[i:i + per_call], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        with clock, torch.inference_mode():
            out = model.generate(**enc, do_sample=True, top_k=256, **SAMPLING,
                                 num_return_sequences=args.samples,
                                 max_new_tokens=args.max_new_tokens,
                                 stop_strings=list(STOP) or None, tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        clock.tokens += _generated(tok, out, enc["input_ids"].shape[1])
    return clock


def naive_run(model, tok, prompts, args) -> Clock:
    """One prompt per ``model.generate`` call, sampling like the Sampler does."""
    texts, clock = _chat_texts(tok, prompts), Clock()
    torch.manual_seed(0)
    for k in range(args.naive_rows):
        ids = tok(texts[k % len(texts)], return_tensors="pt", add_special_tokens=False)
        with clock, torch.inference_mode():
            out = model.generate(**ids, do_sample=True, **SAMPLING,
                                 max_new_tokens=args.max_new_tokens,
                                 stop_strings=list(STOP) or None, tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        clock.tokens += _generated(tok, out, ids["input_ids"].shape[1])
    return clock


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32, help=f"at most {len(PROMPTS)}")
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=256,
                    help="the Sampler's (and batched generate's) rows at once, at most")
    ap.add_argument("--before-batch", type=int, default=64,
                    help="rows at once of `before` and `fast` (64: the default then)")
    ap.add_argument("--repeats", type=int, default=3, help="turns per runner (median)")
    ap.add_argument("--naive-rows", type=int, default=3, help="rows for the one-stream run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also time Sampler(dtype='bfloat16')")
    ap.add_argument("--fast", action="store_true",
                    help="also time Sampler(decode='fast'), batch by batch")
    ap.add_argument("--unshared", action="store_true",
                    help="also time Sampler(share_prompts=False): prompt KV copied to every row")
    ap.add_argument("--no-stop", action="store_true", help="no stop strings (long samples)")
    ap.add_argument("--only", nargs="+", help="run only these runners (no final ratios)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.no_stop:
        STOP.clear()
    prompts = PROMPTS[:args.prompts]
    model, tok = load_model(EMBEDDED_MODEL, device="cpu")
    print(f"model={EMBEDDED_MODEL} dtype={model.dtype} threads={args.threads} "
          f"rows={len(prompts)}x{args.samples} batch={args.batch_size} "
          f"max_new_tokens={args.max_new_tokens} repeats={args.repeats}")
    args.batch_size = rows_at_once(model, tok, prompts, args)
    print(f"Sampler rows at once: {args.batch_size} (KV-cache budget and --batch-size)")
    ceiling = roofline(model.config, args.batch_size)
    runners = {
        "sampler": lambda: sampler_run(model, tok, prompts, args),
        "before": lambda: sampler_run(model, tok, prompts, args, decode="reference",
                                      batch_size=args.before_batch),
        "hf_batched": lambda: hf_batched_run(model, tok, prompts, args),
        "naive": lambda: naive_run(model, tok, prompts, args),
    }
    if args.fast:
        runners["fast"] = lambda: sampler_run(model, tok, prompts, args, decode="fast",
                                              batch_size=args.before_batch)
    if args.unshared:
        runners["unshared"] = lambda: sampler_run(model, tok, prompts, args, share_prompts=False)
    if args.bf16:
        runners["sampler_bf16"] = lambda: sampler_run(model, tok, prompts, args,
                                                      dtype="bfloat16")
    runners = {k: v for k, v in runners.items() if not args.only or k in args.only}
    sampler_run(model, tok, prompts[:1], argparse.Namespace(**{**vars(args), "samples": 1,
                                                                "max_new_tokens": 4}))
    clocks: dict[str, list[Clock]] = {name: [] for name in runners}
    for turn in range(args.repeats):
        for name, run in runners.items():
            c = run()
            clocks[name].append(c)
            print(f"turn {turn} {name:<12} {c.tokens:5d} tokens {c.tokens / c.wall:7.1f}/s wall "
                  f"{c.tokens / c.cpu:7.1f}/s cpu", flush=True)
    report(clocks, ceiling, args.bf16 and not args.only, final=not args.only)


def report(clocks: dict[str, list[Clock]], ceiling: dict[str, float], bf16: bool,
           final: bool = True) -> None:
    """Medians per runner, and the ratios (on tokens per CPU-second, see :class:`Clock`)."""
    med = {}
    for name, runs in clocks.items():
        wall = statistics.median(c.tokens / c.wall for c in runs)
        med[name] = statistics.median(c.tokens / c.cpu for c in runs)
        print(f"{name:<12} median {med[name]:7.1f} tokens/cpu-s "
              f"= {med[name] * ceiling['flops_per_token'] / 1e9:5.1f} GFLOP/s "
              f"(wall {wall:7.1f} tokens/s; n={len(runs)} runs)")
    if bf16:
        print(f"sampler_bf16_vs_before={med['sampler_bf16'] / med['before']:.2f} "
              f"sampler_bf16_vs_hf_batched={med['sampler_bf16'] / med['hf_batched']:.2f} "
              "(opt-in, bf16 numerics)")
    if not final:
        return
    print(f"sampler_vs_shapes_ceiling={med['sampler'] / ceiling['shapes']:.2f}")
    if "unshared" in med:
        same = sum(a == b for a, b in zip(clocks["sampler"][0].token_ids,
                                          clocks["unshared"][0].token_ids))
        print(f"sampler_vs_unshared={med['sampler'] / med['unshared']:.2f} (prompt KV per row; "
              f"{same} of {len(clocks['sampler'][0].token_ids)} samples token for token equal)")
    if "fast" in med:
        print(f"sampler_vs_fast={med['sampler'] / med['fast']:.2f} (batch by batch, today's cache)")
    print(f"sampler_vs_naive={med['sampler'] / med['naive']:.2f} "
          f"sampler_vs_hf_batched={med['sampler'] / med['hf_batched']:.2f} "
          f"sampler_vs_before={med['sampler'] / med['before']:.2f} "
          f"sampler_vs_roofline={med['sampler'] / ceiling['peak']:.2f}")

if __name__ == "__main__":
    main()
