"""Distinct usable problems per generation minute, for the problem stage's variants.

    nice python benchmarks/problem_yield.py [--attempts 24] [--seeds 11]

One embedded model, 1 torch thread; each variant asks for ``--attempts`` problems
(:func:`ucoder.ipc.problems.generate_problems`) and counts those that parse and are not
duplicates (of each other or of the prompt's example). Variants take turns per seed.
Time is the process's CPU time (one thread), which a busy shared machine disturbs far
less than wall time; wall seconds are printed beside it.

* ``base``: one problem per prompt, a topic per prompt (the round's old setting);
* ``per_prompt=2``: two problems sampled per prompt (one prefill serves both);
* ``kinds``: each prompt also names what the function returns (topic x result kind);
* ``per_prompt=2+kinds``: both;
* ``per_prompt=3+kinds``: three per prompt, with kinds;
* ``temperature=1.0``: the base setting, sampled hotter.
"""

from __future__ import annotations

import argparse
import time

VARIANTS = {"base": {}, "per_prompt=2": {"per_prompt": 2}, "kinds": {"kinds": True},
            "per_prompt=2+kinds": {"per_prompt": 2, "kinds": True},
            "per_prompt=3+kinds": {"per_prompt": 3, "kinds": True},
            "temperature=1.0": {"temperature": 1.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    import torch

    from ucoder.generation import Sampler
    from ucoder.ipc.problems import generate_problems
    from ucoder.models import load_model

    torch.set_num_threads(1)
    model, tok = load_model()
    sampler = Sampler(model, tok, show_progress=False)
    for seed in args.seeds:
        for name in args.variants:
            opts = {"temperature": 0.8, "max_new_tokens": 96} | VARIANTS[name]
            start, cpu = time.perf_counter(), time.process_time()
            kept, dropped = generate_problems(sampler, 1000, attempts=args.attempts, seed=seed,
                                              **opts)
            seconds, wall = time.process_time() - cpu, time.perf_counter() - start
            dups = sum("duplicate" in d.reason for d in dropped)
            print(f"seed {seed} {name:20s} distinct {len(kept):2d} of {args.attempts} "
                  f"(parse failures {len(dropped) - dups}, duplicates {dups}) in "
                  f"{seconds:5.1f} CPU s ({wall:5.1f} s wall) -> "
                  f"{len(kept) / seconds * 60:5.2f} per CPU minute", flush=True)


if __name__ == "__main__":
    main()
