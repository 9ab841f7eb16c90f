"""Every YAML in configs/ parses against the real signatures of the command it is for.

A config names its command in a comment (``# ucoder fit --config ...``); parsing uses the
command's own parser, without instantiating anything (no model downloads, no GPU).
To cover a new command, add its parser factory to ``PARSERS``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".yml"))


def _fit_parse(path: Path):
    from lightning.pytorch.cli import LightningCLI

    from ucoder.data import SFTDataModule
    from ucoder.sft import UCoderModule

    class ParseOnly(LightningCLI):
        def instantiate_classes(self) -> None:  # parse and validate types only
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    # The `fit` subcommand's parser: it also knows fit's own keys (e.g. ckpt_path).
    cli = ParseOnly(UCoderModule, SFTDataModule, args=["fit", "--config", str(path)],
                    parser_kwargs={"fit": {"default_env": False}})
    return cli.config["fit"]


def _round_parse(path: Path):
    from ucoder.ipc.config import load_round_config

    return load_round_config(path)


def _study_parse(path: Path):
    """The study's own keys, then its ``fit:`` section as the `ucoder fit` config it is."""
    import tempfile

    import yaml

    from ucoder.commands.study import build_parser

    config = build_parser().parse_args(["--config", str(path)])
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fit:
        yaml.safe_dump(dict(config.fit), fit)
        fit.flush()
        _fit_parse(Path(fit.name))
    return config


PARSERS = {"fit": _fit_parse, "round": _round_parse, "study": _study_parse}


def command_of(path: Path) -> str:
    match = re.search(r"ucoder (\w+)", path.read_text())
    if match is None:
        raise AssertionError(f"{path.name}: add a comment naming its command, "
                             "e.g. '# ucoder fit --config configs/x.yaml'")
    return match.group(1)


def test_configs_exist():
    assert {"demo.yaml", "gpu_qlora.yaml", "multi_gpu.yaml"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_config_parses_against_the_signatures(path):
    command = command_of(path)
    assert command in PARSERS, f"{path.name}: no parser registered for 'ucoder {command}'"
    config = PARSERS[command](path)
    assert config is not None


def test_a_wrong_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "demo.yaml").read_text().replace("lr: 2.0e-4", "lrate: 2.0e-4"))
    with pytest.raises(SystemExit):
        _fit_parse(bad)


def test_demo_config_values_reach_the_classes():
    config = _fit_parse(CONFIGS / "demo.yaml")
    assert config.model.model == "embedded:smollm2-135m-instruct"
    assert config.model.load_in_4bit is True and config.model.lora.r == 16
    assert config.data.format == "chat" and (CONFIGS.parent / config.data.train_file).is_file()


def test_demo_loop_is_one_callback_built_from_its_parts():
    from jsonargparse import ArgumentParser

    from ucoder.callbacks import PassAtKEvaluator, ProbeRefitter, RoundStep, SelfTraining

    config = _fit_parse(CONFIGS / "demo.yaml")
    loops = [c for c in config.trainer.callbacks
             if c.class_path == "ucoder.callbacks.SelfTraining"]
    assert len(loops) == 1 and len(config.trainer.callbacks) == 2
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--loop", type=SelfTraining)
    loop = parser.instantiate_classes(parser.parse_object({"loop": loops[0].as_dict()})).loop
    assert isinstance(loop.round_step, RoundStep) and loop.round_step.round_config.problems == 32
    assert isinstance(loop.evaluate, PassAtKEvaluator) and loop.evaluate.limit == 40
    assert isinstance(loop.probe, ProbeRefitter) and loop.generation == "training_weights"
