"""VLLMRoundStep: rounds generate with vLLM, the trained LoRA sent as an adapter.

The engine loads the base model once, at the first round, and stays up for the whole fit.
Before each round the training model's current LoRA is saved (a few MB) and handed to
the engine as a new ``LoRARequest``: no merge, no reload of the base, and a 4-bit base
stays 4-bit on both sides. In a config::

    round_step:
      class_path: ucoder.callbacks.vllm_rounds.VLLMRoundStep
      init_args: {gpu_memory_utilization: 0.4}

The loop's ``generation`` must be ``training_weights`` (the adapter is read from the
training model). Evaluation still generates with the HF Sampler. Under DDP every rank
starts its own engine on its own GPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ucoder.callbacks.rounds import RoundStep
from ucoder.ipc.round import RoundConfig


class VLLMRoundStep(RoundStep):
    """A :class:`RoundStep` whose rounds sample with :class:`~ucoder.generation_vllm.VLLMBackend`.

    Args:
        round_config: the IPC round (problems, tests, samples, selection, ...).
        keep_previous: train on all rounds' selected pairs so far.
        stop_when_empty: stop the fit when a round selects nothing new.
        avoid_repeats: give the round the earlier rounds' problems.
        batch_size: unused by vLLM (it batches by itself); kept for the parent's checks.
        seed: base seed; round k on rank r uses ``seed + 1000 * k + r``.
        model: the base model vLLM loads (names as ``ucoder.models.load_model``); ``None``:
            the training model's own base.
        dtype: vLLM's dtype (``auto``: bfloat16 on a GPU that has it, else float32).
        load_in_4bit: vLLM's bitsandbytes 4-bit base (CUDA and ``vllm-bnb-plugin``).
        gpu_memory_utilization: share of the GPU for vLLM; the rest is the training's.
        max_model_len: longest prompt + completion, in tokens.
        max_lora_rank: largest LoRA rank the engine accepts (>= the training LoRA's r).
        adapter_dir: where each round's adapter is saved (``None``: a temporary folder).
    """

    def __init__(self, round_config: RoundConfig | None = None, keep_previous: bool = True,
                 stop_when_empty: bool = True, avoid_repeats: bool = True,
                 batch_size: int = 64, seed: int = 0, model: str | None = None,
                 dtype: str = "auto", load_in_4bit: bool = False,
                 gpu_memory_utilization: float = 0.4, max_model_len: int = 4096,
                 max_lora_rank: int = 64, adapter_dir: str | None = None):
        super().__init__(round_config, keep_previous, stop_when_empty, avoid_repeats,
                         batch_size, seed)
        self.model, self.dtype, self.load_in_4bit = model, dtype, load_in_4bit
        self.engine_options = {"gpu_memory_utilization": gpu_memory_utilization,
                               "max_model_len": max_model_len, "max_lora_rank": max_lora_rank}
        self.adapter_dir = adapter_dir
        self.engine = None

    def make_sampler(self, model, tokenizer, index: int, show_progress: bool = False):
        """Save ``model``'s LoRA for round ``index`` and send it to the (once-built) engine."""
        if not hasattr(model, "peft_config"):
            raise ValueError("VLLMRoundStep sends the training LoRA to vLLM, but the model "
                             "it was given has no adapter: use the loop's "
                             "generation='training_weights' and a module with lora")
        path = self._adapter_root() / f"round_{index}"
        model.save_pretrained(path)
        if self.engine is None:
            self.engine = self._build_engine(model, show_progress)
        self.engine.set_adapter(str(path))
        return self.engine

    def _build_engine(self, model, show_progress: bool):
        from ucoder.generation_vllm import VLLMBackend

        base = self.model or model.get_base_model().config.name_or_path
        return VLLMBackend(base, dtype=self.dtype, load_in_4bit=self.load_in_4bit,
                           seed=self.seed, show_progress=show_progress, **self.engine_options)

    def _adapter_root(self) -> Path:
        if self.adapter_dir is None:
            self.adapter_dir = tempfile.mkdtemp(prefix="ucoder-vllm-adapters-")
        root = Path(self.adapter_dir)
        root.mkdir(parents=True, exist_ok=True)
        return root
