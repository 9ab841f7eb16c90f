"""QLoRA SFT speed and memory: UCoderModule (Lightning) vs TRL's SFTTrainer, same run.

Both trainers get the same base model (loaded 4-bit NF4 through ``ucoder.models``), the
same LoRA (r 16, alpha 32, dropout 0.05, all linear layers), the same chat-format
prompt/completion pairs with completion-only loss, batch size, optimizer (torch AdamW),
schedule and number of steps. Each runs in its own subprocess so its peak RSS is its own.
tokens/s = real (non-pad) tokens of the trained examples / wall time from the first
step's start to the last step's end; both use the same token count. On a shared machine
wall time swings several-fold with other load, so use ``--repeats`` (runs alternate, the
best time of each counts) and compare the printed CPU-time ratio as well.

    .venv/bin/python benchmarks/sft.py --steps 3 --batch-size 8 --repeats 3 --threads 1

The last line is ``tokens_per_s_vs_trl=<ratio> peak_rss_vs_trl=<ratio>`` (ours / TRL's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "configs" / "data" / "demo_sft.jsonl"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def run_ucoder(args) -> dict:
    import lightning as L

    from ucoder.data import SFTDataModule
    from ucoder.models import LoraOptions
    from ucoder.sft import UCoderModule

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *a):
            times.extend([time.perf_counter(), time.process_time()]) if not times else None

        def on_train_batch_end(self, *a):
            times[2:] = [time.perf_counter(), time.process_time()]

    module = UCoderModule(model=args.model, load_in_4bit=True, lora=LoraOptions(**LORA),
                          lr=2e-4, warmup_steps=int(0.1 * args.steps), optimizer="adamw",
                          adapter_dir="",
                          loss_chunk_size=args.loss_chunk_size)
    dm = SFTDataModule(train_file=args.data, batch_size=args.batch_size, max_length=1024,
                       pack=args.pack)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Clock()])
    trainer.fit(module, dm)
    return {"seconds": times[2] - times[0], "cpu_seconds": times[3] - times[1],
            "steps": trainer.global_step}


def run_trl(args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ucoder.jsonl import read_jsonl
    from ucoder.models import LoraOptions, load_model, lora_config

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.extend([time.perf_counter(), time.process_time()]) if not times else None

        def on_step_end(self, *a, **k):
            times[2:] = [time.perf_counter(), time.process_time()]

    model, tok = load_model(args.model, load_in_4bit=True, device="cpu")
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": r["completion"]}]}
            for r in read_jsonl(args.data)]
    config = SFTConfig(
        output_dir=args.workdir, per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=2e-4, lr_scheduler_type="cosine",
        warmup_steps=int(0.1 * args.steps), optim="adamw_torch", logging_steps=1,
        save_strategy="no",
        report_to="none", gradient_checkpointing=False, bf16=False, fp16=False,
        use_cpu=True, dataloader_num_workers=0, max_length=1024, packing=False,
        completion_only_loss=True, seed=0, disable_tqdm=True)
    callbacks = [Clock()]
    if args.trl_adapter_dtype == "float32":
        # TRL casts QLoRA adapters to bf16 (the paper's choice); on a CPU without native
        # bf16 that alone makes it several times slower, so by default we compare like
        # with like: fp32 adapters, as UCoderModule trains them.
        class Fp32Adapters(TrainerCallback):
            def on_train_begin(self, *a, model=None, **k):
                for p in model.parameters():
                    if p.requires_grad:
                        p.data = p.data.float()

        callbacks.append(Fp32Adapters())
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, peft_config=lora_config(LoraOptions(**LORA)),
                         callbacks=callbacks)
    trainer.train()
    return {"seconds": times[2] - times[0], "cpu_seconds": times[3] - times[1],
            "steps": trainer.state.global_step}


def count_tokens(args) -> int:
    """Real tokens of the examples the trainers see (chat template, as both render it)."""
    from ucoder.data import read_pairs, tokenize_pairs
    from ucoder.models import load_tokenizer

    examples, _ = tokenize_pairs(read_pairs(args.data), load_tokenizer(args.model))
    return sum(len(e.input_ids) for e in examples)


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (run_ucoder if args.child == "ucoder" else run_trl)(args)
    result["peak_rss_gib"] = peak_rss_gib()
    print("RESULT " + json.dumps(result), flush=True)


def spawn(which: str, args, workdir: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--data", args.data,
           "--model", args.model, "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), "--threads", str(args.threads), "--workdir", workdir,
           "--trl-adapter-dtype", args.trl_adapter_dtype]
    if args.pack:
        cmd.append("--pack")
    if args.loss_chunk_size:
        cmd += ["--loss-chunk-size", str(args.loss_chunk_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-6000:])
        raise SystemExit(f"{which} run failed (exit {out.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=1, help="alternate runs; best time counts")
    p.add_argument("--pack", action="store_true", help="ucoder: padding-free packed rows")
    p.add_argument("--loss-chunk-size", type=int, default=None)
    p.add_argument("--trl-adapter-dtype", choices=["float32", "default"], default="float32",
                   help="float32: TRL trains fp32 adapters like ucoder; default: TRL's bf16")
    p.add_argument("--data", default=None, help="pairs JSONL (default: the demo pairs, "
                   "repeated to steps x batch-size examples)")
    p.add_argument("--child", choices=["ucoder", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory() as work:
        if args.data is None:
            from ucoder.jsonl import read_jsonl, write_jsonl

            rows = read_jsonl(DATA)
            need = args.steps * args.batch_size
            args.data = str(write_jsonl(Path(work) / "pairs.jsonl",
                                        [rows[i % len(rows)] for i in range(need)]))
        tokens = count_tokens(args)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for which in ("ucoder", "trl"):
                r = spawn(which, args, work)
                print(f"{which}: {r['steps']} steps, {r['seconds']:.1f} s, "
                      f"{tokens / r['seconds']:.1f} tokens/s, peak RSS "
                      f"{r['peak_rss_gib']:.2f} GiB, CPU time {r['cpu_seconds']:.1f} s",
                      flush=True)
                if which not in best or r["seconds"] < best[which]["seconds"]:
                    best[which] = r
    u, t = best["ucoder"], best["trl"]
    print(f"machine: {os.cpu_count()} CPUs, torch threads {args.threads}; {tokens} tokens, "
          f"{args.steps} steps x batch {args.batch_size}; TRL adapters: {args.trl_adapter_dtype}")
    print(f"cpu_time_vs_trl={u['cpu_seconds'] / t['cpu_seconds']:.2f} (ours / TRL, the "
          "best-time runs; CPU time is less sensitive to other load on a shared machine)")
    print(f"tokens_per_s_vs_trl={t['seconds'] / u['seconds']:.2f} "
          f"peak_rss_vs_trl={u['peak_rss_gib'] / t['peak_rss_gib']:.2f}")


if __name__ == "__main__":
    main()
