"""The ``ucoder`` dispatcher and the model options every model-loading command shares."""

from __future__ import annotations

import argparse
import importlib.util
import re

import pytest

from ucoder.cli import COMMANDS, main
from ucoder.commands.options import (
    EMBEDDED_MODEL,
    ModelOptions,
    add_model_arguments,
    model_options,
)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_help_says_what_each_command_does(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = _one_line(capsys.readouterr().out)
    for name, module in COMMANDS.items():
        help_line = importlib.import_module(module).HELP
        assert len(help_line) > 20 and f"{name} {_one_line(help_line)}" in out, name
    assert "--backend" in out and "--threads" in out


@pytest.mark.parametrize("command", ["generate", "round", "eval"])
def test_model_loading_commands_share_one_set_of_options(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command]).add_arguments(parser)
    args = parser.parse_args(["--prompt", "p"] if command == "generate" else ["--out", "x"])
    assert model_options(args) == ModelOptions()
    assert ModelOptions().threads == 0 and ModelOptions().model == EMBEDDED_MODEL


def test_the_embedded_name_matches_the_loader():
    from ucoder.models import EMBEDDED_MODEL as loader_default

    assert EMBEDDED_MODEL == loader_default


@pytest.mark.parametrize("kw,message", [
    ({"backend": "onnx"}, "--backend='onnx' is not allowed; choose one of hf, vllm"),
    ({"threads": -1}, "--threads=-1 is not allowed"),
    ({"dtype": "int8"}, "--dtype='int8' is not allowed"),
])
def test_bad_model_options_name_the_option(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelOptions(**kw)


def test_only_adds_the_named_options():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, model_default=None, only=("model", "dtype"))
    args = parser.parse_args([])
    assert vars(args) == {"model": None, "dtype": "auto"}


def test_four_bit_vllm_on_a_cpu_is_refused_before_loading(capsys):
    rc = main(["generate", "--prompt", "x", "--backend", "vllm", "--load-in-4bit",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ucoder generate: error: --load-in-4bit with "
                                      "--backend=vllm needs a CUDA GPU")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_names_the_extra(capsys):
    rc = main(["generate", "--prompt", "x", "--backend", "vllm", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--backend=vllm needs vLLM" in err and "pip install 'ucoder[vllm]'" in err


def test_errors_are_one_line_and_exit_status_2(tmp_path, capsys):
    rc = main(["sandbox", "run", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ucoder sandbox run: error: cannot read JOBS.jsonl")
    assert "Traceback" not in err
