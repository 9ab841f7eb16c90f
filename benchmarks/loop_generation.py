"""The loop's candidates stage: generating from the 4-bit + LoRA training model vs from
its merged generation copy (``ucoder.models.merged_generation_copy``), in one run.

    .venv/bin/python benchmarks/loop_generation.py [--samples 8] [--max-new-tokens 192]
        [--repeats 3] [--threads 1] [--fp32]

Both runners call the real stage (:func:`ucoder.ipc.solutions.sample_candidates`) on
the same problems, with the same seed, n, temperature and max tokens. The training model
is the embedded model loaded as the loop loads it for QLoRA (bitsandbytes 4-bit base,
default options, plus a LoRA adapter whose B matrices are given small random weights, as
after training). The copy is ``merged_generation_copy(model)`` as the loop makes it
(its default dtype is the 4-bit compute dtype: bf16 on CPUs with AVX512-BF16, where
bitsandbytes' 4-bit kernel multiplies in bf16 too), made inside the timed region;
``--fp32`` adds a float32 copy. Runners take turns; each figure is the median over
``--repeats``, in tokens per CPU-second of this process (steady on a shared machine with
one thread; wall-clock rates beside them). Last line: ``merged_copy_vs_4bit=<ratio>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ucoder.generation import Sampler
from ucoder.ipc.solutions import sample_candidates
from ucoder.models import EMBEDDED_MODEL, LoraOptions, load_model, merged_generation_copy
from ucoder.records import Problem

SKELETONS = {
    "count_vowels": 'def count_vowels(s: str) -> int:\n    """Return how many vowels '
                    '(a, e, i, o, u) s contains.\n\n    >>> count_vowels("hello")\n    2\n'
                    '    """\n',
    "running_max": 'from typing import List\n\n\ndef running_max(xs: List[int]) -> List[int]:'
                   '\n    """Return the maximum of xs[:i + 1] for every i.\n\n'
                   '    >>> running_max([1, 3, 2])\n    [1, 3, 3]\n    """\n',
    "is_anagram": 'def is_anagram(a: str, b: str) -> bool:\n    """Whether a and b have the '
                  'same letters, ignoring case.\n\n    >>> is_anagram("Listen", "silent")\n'
                  '    True\n    """\n',
    "celsius_to_f": 'def celsius_to_f(c: float) -> float:\n    """Convert Celsius to '
                    'Fahrenheit.\n\n    >>> celsius_to_f(100)\n    212.0\n    """\n',
    "dedupe": 'from typing import List\n\n\ndef dedupe(xs: List[int]) -> List[int]:\n'
              '    """Drop repeated values, keeping the first of each, in order.\n\n'
              '    >>> dedupe([3, 1, 3, 2, 1])\n    [3, 1, 2]\n    """\n',
    "word_lengths": 'def word_lengths(text: str) -> dict:\n    """Map each word of text to '
                    'its length.\n\n    >>> word_lengths("a bb")\n    {\'a\': 1, \'bb\': 2}'
                    '\n    """\n',
    "digit_sum": 'def digit_sum(n: int) -> int:\n    """Sum of the decimal digits of |n|.\n\n'
                 '    >>> digit_sum(-123)\n    6\n    """\n',
    "chunk": 'from typing import List\n\n\ndef chunk(xs: List[int], k: int) -> List[List[int]]:'
             '\n    """Split xs into pieces of k items (the last may be shorter).\n\n'
             '    >>> chunk([1, 2, 3], 2)\n    [[1, 2], [3]]\n    """\n',
}


def problems() -> list[Problem]:
    return [Problem(id=f"p{k:04d}", title=name, description="", signature="",
                    entry_point=name, skeleton=skeleton)
            for k, (name, skeleton) in enumerate(SKELETONS.items())]


def training_model():
    """The embedded model as QLoRA trains it: 4-bit base + LoRA with non-zero B."""
    torch.manual_seed(0)  # peft draws lora_A from the global generator
    model, tok = load_model(EMBEDDED_MODEL, load_in_4bit=True, device="cpu",
                            lora=LoraOptions(r=16, alpha=32, dropout=0.05))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 1e-3)
    return model, tok


def stage_rate(model, tok, args, copy: str | None) -> tuple[float, float, int]:
    """Tokens per wall- and per CPU-second of the candidates stage, and the kept rows.

    ``copy``: None (the training model), ``default`` (``merged_generation_copy(model)``,
    as the loop makes it) or a dtype name for the copy; the copy is made in the timed
    region. CPU time (this process) is the steady figure on a shared machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    if copy is None:
        gen_model = model
    else:
        gen_model = merged_generation_copy(model, getattr(torch, copy, None))
    sampler = Sampler(gen_model, tok, batch_size=args.batch_size, show_progress=False)
    rows, _ = sample_candidates(sampler, problems(), args.samples, seed=0,
                                max_new_tokens=args.max_new_tokens)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sampler.last_stats["tokens"]
    return tokens / wall, tokens / cpu, len(rows)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=8, help="candidates per problem")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fp32", action="store_true", help="also a float32 merged copy")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, tok = training_model()
    copy_dtype = merged_generation_copy(model).dtype
    print(f"model={EMBEDDED_MODEL} 4-bit+LoRA threads={args.threads} copy_dtype={copy_dtype} "
          f"problems={len(SKELETONS)}x{args.samples} max_new_tokens={args.max_new_tokens} "
          f"batch={args.batch_size} repeats={args.repeats}")
    runners = {"4bit+lora": None, "merged_copy": "default"}
    if args.fp32:
        runners["merged_fp32"] = "float32"
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for turn in range(args.repeats):
        for name, dtype in runners.items():
            wall, cpu, kept = stage_rate(model, tok, args, dtype)
            rates[name].append((wall, cpu))
            print(f"turn {turn} {name:<12} {wall:7.1f} tokens/s wall {cpu:7.1f}/s cpu "
                  f"({kept} candidates kept)", flush=True)
    med = {name: statistics.median(c for _, c in v) for name, v in rates.items()}
    for name, value in med.items():
        wall = statistics.median(w for w, _ in rates[name])
        print(f"{name:<12} median {value:7.1f} tokens/cpu-s (wall {wall:7.1f} tokens/s; "
              f"n={len(rates[name])} runs)")
    if args.fp32:
        print(f"merged_fp32_vs_4bit={med['merged_fp32'] / med['4bit+lora']:.2f}")
    print(f"merged_copy_vs_4bit={med['merged_copy'] / med['4bit+lora']:.2f}")


if __name__ == "__main__":
    main()
