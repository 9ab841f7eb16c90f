"""How much the decode step's matmuls lose to cold weights, and whether oneDNN's
prepacked linear recovers it (fp32, one thread by default).

    .venv/bin/python benchmarks/gemm_cold.py [--rows 64] [--weights 90] [--threads 1]

A decode step reads each of the model's weights once, so none stays in cache; an
isolated matmul benchmark reuses one weight. Both are timed here on the embedded
model's largest layer shape (rows x 576 x 1536), in GFLOP per CPU-second, median of
``--repeats`` turns taken in alternation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F
from torch.utils import mkldnn


def rate(fn, flops: float, reps: int) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(reps):
        fn()
    return flops * reps / (time.process_time() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--weights", type=int, default=90, help="distinct weights cycled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, 576)
    layers = [torch.nn.Linear(576, 1536, bias=False) for _ in range(args.weights)]
    packed = [mkldnn.to_mkldnn(layer) for layer in layers]
    flops = 2.0 * args.rows * 576 * 1536 * args.weights
    runners = {
        "hot (one weight)": lambda: [F.linear(x, layers[0].weight) for _ in layers],
        "cold (F.linear)": lambda: [F.linear(x, layer.weight) for layer in layers],
        "cold (mkldnn prepacked)": lambda: [layer(x) for layer in packed],
    }
    results = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in runners.items():
                results[name].append(rate(fn, flops, reps=3))
    for name, values in results.items():
        print(f"{name:<24} {statistics.median(values):6.1f} GFLOP/s "
              f"(n={len(values)}: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
