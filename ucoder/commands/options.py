"""The model options every command that loads a model shares, in one typed place.

:class:`ModelOptions` is the schema; :func:`add_model_arguments` puts it on an argparse
parser (``--model --adapter --backend --device --dtype --load-in-4bit --threads``, the
same names, defaults and help everywhere); :func:`model_options` reads it back, checked;
:func:`load` and :func:`build_backend` turn it into a model or a generation backend.
Nothing here imports torch or transformers until a model is actually loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"  # = ucoder.models.EMBEDDED_MODEL
BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
VLLM_EXTRA = "pip install 'ucoder[vllm]'"


@dataclass
class ModelOptions:
    """Which model to load and how.

    Attributes:
        model: Hugging Face id, local directory or ``embedded:smollm2-135m-instruct``.
        adapter: a saved PEFT (LoRA) adapter directory applied on top (None: none).
        backend: ``hf`` (transformers, any device) or ``vllm`` (the optional extra).
        device: ``auto`` (a CUDA GPU when present, else the CPU), ``cpu``, ``cuda``,
            ``cuda:N``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16`` (non-quantized weights).
        load_in_4bit: bitsandbytes NF4 base weights.
        threads: torch CPU threads; 0 keeps torch's default (one per core). On a shared,
            busy machine fewer threads can be faster, since torch's threads wait on each
            other.
    """

    model: str = EMBEDDED_MODEL
    adapter: str | None = None
    backend: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    threads: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend={self.backend!r} is not allowed; choose one of "
                             f"{', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype={self.dtype!r} is not allowed; choose one of "
                             f"{', '.join(DTYPES)}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 0:
            raise ValueError(f"--threads={self.threads} is not allowed; use 0 (torch's "
                             "default) or a positive integer")


def add_model_arguments(parser: argparse.ArgumentParser, *, model_default: str | None =
                        EMBEDDED_MODEL, model_help: str | None = None,
                        only: tuple[str, ...] | None = None) -> None:
    """Add the :class:`ModelOptions` flags to ``parser``.

    Args:
        parser: the command's parser.
        model_default: the default of ``--model`` (None: the command finds one itself).
        model_help: the help of ``--model`` when the default needs explaining.
        only: add just these fields (e.g. a command that needs hidden states has no
            ``backend``); None: all of them.
    """
    d = ModelOptions()
    flags = {
        "model": dict(default=model_default, help=model_help or "HF id, local directory or "
                      f"{EMBEDDED_MODEL} (default: %(default)s)"),
        "adapter": dict(default=None, help="PEFT adapter directory to apply"),
        "backend": dict(default=d.backend, choices=BACKENDS,
                        help=f"generation backend (vllm: {VLLM_EXTRA})"),
        "device": dict(default=d.device, help="auto, cpu, cuda, cuda:N"),
        "dtype": dict(default=d.dtype, choices=DTYPES, help="weights' dtype"),
        "load_in_4bit": dict(action="store_true", help="bitsandbytes NF4 base weights"),
        "threads": dict(type=int, default=d.threads,
                        help="torch CPU threads (0: torch's default; fewer can be faster "
                             "on a busy machine)"),
    }
    for name, kwargs in flags.items():
        if only is None or name in only:
            parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The checked :class:`ModelOptions` from parsed arguments (absent flags: defaults)."""
    given = {f.name: getattr(args, f.name) for f in fields(ModelOptions)
             if getattr(args, f.name, None) is not None}
    return ModelOptions(**given)


def apply_threads(opts: ModelOptions) -> None:
    """Set torch's CPU thread count when ``threads`` asks for one."""
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)


def load(opts: ModelOptions):
    """``(model, tokenizer)`` with the Hugging Face backend (what hidden states need)."""
    from ucoder.models import load_model

    apply_threads(opts)
    return load_model(opts.model, adapter=opts.adapter, device=opts.device, dtype=opts.dtype,
                      load_in_4bit=opts.load_in_4bit)


def build_backend(opts: ModelOptions, *, batch_size: int = 256, chat: bool | None = None,
                  show_progress: bool = True, seed: int = 0):
    """The generation backend ``opts`` names: a ``Sampler`` or a ``VLLMBackend``.

    Raises:
        ValueError: vLLM is not installed, or a 4-bit base is asked of vLLM on a CPU.
    """
    if opts.backend == "vllm":
        return _vllm_backend(opts, chat=chat, show_progress=show_progress, seed=seed)
    from ucoder.generation import Sampler

    model, tokenizer = load(opts)
    return Sampler(model, tokenizer, batch_size=batch_size, chat=chat,
                   show_progress=show_progress)


def _vllm_backend(opts: ModelOptions, *, chat, show_progress, seed):
    if opts.load_in_4bit and not _cuda(opts.device):
        raise ValueError("--load-in-4bit with --backend=vllm needs a CUDA GPU (vLLM's "
                         "bitsandbytes path); on a CPU use --backend=hf or drop --load-in-4bit")
    try:
        from ucoder.generation_vllm import VLLMBackend
    except ImportError as err:
        raise ValueError(f"--backend=vllm needs vLLM, which is not installed: {VLLM_EXTRA} "
                         f"({err})") from err
    apply_threads(opts)
    return VLLMBackend(opts.model, adapter=opts.adapter, dtype=opts.dtype, chat=chat,
                       load_in_4bit=opts.load_in_4bit, seed=seed, show_progress=show_progress)


def _cuda(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()
