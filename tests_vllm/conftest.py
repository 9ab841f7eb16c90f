"""Fixtures for the real-engine tests: one vLLM engine, one HF model, one tiny LoRA.

These tests run only in the vLLM environment (``make test-vllm``), never under
``make test``. The engine loads once per session: on this CPU that costs tens of
seconds, and sampling is slow, so every test keeps prompts and lengths small.
"""

from __future__ import annotations

import os
import time

# Before vLLM is imported: run the engine core in this process (no spawned worker,
# so pytest needs no __main__ guard) and keep its CPU KV cache small (in GiB).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Let the OS place its threads: pinned to one core, it waits whenever that core is busy.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import pytest  # noqa: E402
import torch  # noqa: E402

from ucoder.models import EMBEDDED_MODEL, load_model  # noqa: E402

STATS: dict[str, float] = {}


@pytest.fixture(scope="session")
def engine():
    """The vLLM backend on the embedded model, in float32 (as the HF reference)."""
    from ucoder.generation_vllm import VLLMBackend

    start = time.perf_counter()
    backend = VLLMBackend(EMBEDDED_MODEL, dtype="float32", max_model_len=1024,
                          max_lora_rank=8, show_progress=False)
    STATS["load_s"] = time.perf_counter() - start
    return backend


@pytest.fixture(scope="session")
def hf():
    """The HF Sampler on the same model, float32, as the reference."""
    from ucoder.generation import Sampler

    model, tokenizer = load_model(EMBEDDED_MODEL, device="cpu", dtype="float32")
    return Sampler(model, tokenizer, show_progress=False)


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory, hf):
    """A LoRA trained for two AdamW steps on one sentence, saved as a PEFT directory."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model, tokenizer = load_model(EMBEDDED_MODEL, device="cpu", dtype="float32")
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    text = hf.format_prompt("Say something.") + "Banana banana banana banana banana."
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(2):
        loss = peft_model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(out)
    return str(out)


def hf_token_logprobs(model, prompt_ids: list[int], cont_ids: list[int]):
    """Teacher-forced log-probs of ``cont_ids`` after ``prompt_ids``, and each step's
    gap between the two most likely tokens (a near-tie is a small gap)."""
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, torch.tensor(cont_ids)[:, None]).squeeze(-1)
    top2 = logprobs.topk(2, dim=-1).values
    return chosen.tolist(), (top2[:, 0] - top2[:, 1]).tolist()


def pytest_terminal_summary(terminalreporter):
    if STATS:
        line = ", ".join(f"{k}={v:.3g}" for k, v in STATS.items())
        terminalreporter.write_line(f"vLLM backend (embedded model, float32, CPU): {line}")
