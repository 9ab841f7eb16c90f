"""Engine load time and tokens/s of VLLMBackend beside the HF Sampler, same prompts.

Run in the vLLM venv (after ``make test-vllm``), on a quiet machine:
    .venv-vllm/bin/python tests_vllm/measure.py [--prompts 4] [--n 4] [--tokens 64]
On a CPU the numbers say what correctness tests cost, not how fast vLLM is on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

PROMPTS = ["Write a Python function that returns the square of a number.",
           "Write a Python function that reverses a string.",
           "Write a Python function that checks whether a number is prime.",
           "Write a Python function that sums a list of integers."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    prompts = (PROMPTS * args.prompts)[:args.prompts]
    kw = dict(n=args.n, max_new_tokens=args.tokens, temperature=0.8, seed=0)

    from ucoder.generation import Sampler
    from ucoder.generation_vllm import VLLMBackend
    from ucoder.models import EMBEDDED_MODEL, load_model

    start = time.perf_counter()
    engine = VLLMBackend(EMBEDDED_MODEL, dtype="float32", max_model_len=1024,
                         max_lora_rank=8, show_progress=False)
    load_s = time.perf_counter() - start
    engine.sample(prompts[:1], max_new_tokens=4)  # warm-up
    engine.sample(prompts, **kw)
    vllm_stats = engine.last_stats
    sampler = Sampler(*load_model(EMBEDDED_MODEL, device="cpu", dtype="float32"),
                      show_progress=False)
    sampler.sample(prompts, **kw)
    hf_stats = sampler.last_stats
    import torch

    print(f"rows={len(prompts) * args.n} max_new_tokens={args.tokens} "
          f"hf_torch_threads={torch.get_num_threads()} "
          f"load_s={load_s:.1f} vllm_tokens_per_s={vllm_stats['tokens_per_s']:.1f} "
          f"hf_sampler_tokens_per_s={hf_stats['tokens_per_s']:.1f} "
          f"vllm_vs_hf={vllm_stats['tokens_per_s'] / hf_stats['tokens_per_s']:.2f}")


if __name__ == "__main__":  # vLLM may start its engine core with spawn
    main()
