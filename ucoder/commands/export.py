"""``ucoder export``: copy a trained PEFT adapter, or merge it into its base model."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

HELP = "export a trained LoRA adapter, or merge it into the base model (--merge)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``ucoder export``."""
    from ucoder.commands.options import add_model_arguments

    parser.add_argument("--adapter", required=True,
                        help="PEFT adapter directory (e.g. runs/demo/adapters/epoch_0)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--merge", action="store_true",
                        help="write a full model with the adapter merged into the weights")
    # The base is loaded unquantized on the CPU: merging into 4-bit weights would round them.
    add_model_arguments(parser, model_default=None, only=("model", "dtype"),
                        model_help="base model (default: the one recorded in the adapter)")


def base_model_of(adapter: Path) -> str:
    """The base model recorded in ``adapter_config.json``."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise SystemExit(f"ucoder export: --adapter {str(adapter)!r} is not a PEFT adapter "
                         "directory (no adapter_config.json)")
    name = json.loads(config.read_text()).get("base_model_name_or_path")
    if not name:
        raise SystemExit("ucoder export: the adapter does not record its base model; "
                         "give --model")
    return name


def export(adapter: str, out: str, *, merge: bool = False, model: str | None = None,
           dtype: str = "auto") -> Path:
    """Write ``adapter`` (or, with ``merge``, base + adapter merged) to ``out`` atomically."""
    from ucoder.atomic import atomic_directory
    from ucoder.models import load_model, load_tokenizer

    src, out_path = Path(adapter), Path(out)
    name = model or base_model_of(src)
    with atomic_directory(out_path) as tmp:
        if merge:
            # Merge into an unquantized base: merging into 4-bit weights would round them.
            peft_model, tok = load_model(name, adapter=str(src), device="cpu", dtype=dtype)
            peft_model.merge_and_unload().save_pretrained(tmp)
            tok.save_pretrained(tmp)
        else:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if not (src / "tokenizer_config.json").is_file():
                load_tokenizer(name).save_pretrained(tmp)
    return out_path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ucoder export``."""
    path = export(args.adapter, args.out, merge=args.merge, model=args.model, dtype=args.dtype)
    print(f"wrote {'merged model' if args.merge else 'adapter'} to {path}")
    return 0
