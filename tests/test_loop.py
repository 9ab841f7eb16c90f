"""The self-training loop end to end: Trainer + UCoderModule + SFTDataModule + SelfTraining.

A tiny random Llama is trained for real (LoRA, Lightning); the sandbox, the IPC stages,
consensus, probes and the report are real. Only the *text* of each stage comes from a
scripted generator (a random model writes no parsable problems), and it writes other
problems in each round, so the training data must change between rounds.
"""

from __future__ import annotations

import json

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.callbacks import (
    PassAtKEvaluator,
    ProbeRefitter,
    ReportWriter,
    RoundStep,
    SelfTraining,
)
from ucoder.data import SFTDataModule
from ucoder.generation import Sample
from ucoder.ipc.round import RoundConfig
from ucoder.models import LoraOptions
from ucoder.sft import UCoderModule

# name -> (description, signature, tests, right body, wrong body); two new tasks per round.
TASKS = {
    0: {"add_two": ("Return the sum of the integers a and b.", "def add_two(a: int, b: int) -> int",
                    ["add_two(1, 2) == 3", "add_two(5, 5) == 10", "add_two(0, 7) == 7"],
                    "return a + b", "return a - b"),
        "shout": ("Return the text s in upper case letters.", "def shout(s: str) -> str",
                  ["shout('ab') == 'AB'", "shout('x y') == 'X Y'", "shout('') == ''"],
                  "return s.upper()", "return s.lower()")},
    1: {"biggest": ("Return the largest number in the non-empty list xs.",
                    "def biggest(xs: list) -> int",
                    ["biggest([1, 5, 2]) == 5", "biggest([7]) == 7", "biggest([-3, -1]) == -1"],
                    "return max(xs)", "return min(xs)"),
        "twice": ("Repeat the word w two times without a separator.", "def twice(w: str) -> str",
                  ["twice('ab') == 'abab'", "twice('') == ''", "twice('z') == 'zz'"],
                  "return w * 2", "return w")},
}


class ScriptedSampler:
    """Answers each IPC stage with fixed text for the tasks of one round."""

    def __init__(self, round_index: int):
        self.tasks = TASKS[round_index % 2]
        self.calls = 0

    def format_prompt(self, prompt: str, prefix: str = "") -> str:
        return prompt + prefix

    def score(self, prompts, continuations, *, prefix=""):
        return [[-1.0 if c.strip() == "9/10" else -6.0 for c in group]
                for group in continuations]

    def sample(self, prompts, n=1, *, prefix="", **kwargs):
        from ucoder.ipc import prompts as P

        self.calls += 1
        names = list(self.tasks)
        out = []
        for i, prompt in enumerate(prompts):
            name = names[i % len(names)]
            if prefix == P.PROBLEM_PREFIX:
                desc, sig, tests, _, _ = self.tasks[name]
                texts = [f" {name}\nDescription: {desc}\nSignature: {sig}\n"
                         f"Example: {tests[0]}\nHint: one line is enough.\n"] * n
            elif prefix == P.RATING_PREFIX:
                texts = [" 9\nReason: clear and solvable."] * n
            elif prefix == P.TEST_PREFIX:
                name = next(k for k in self.tasks if f"`{k}`" in prompt)
                texts = ["\nassert ".join(self.tasks[name][2]) + "\n"] * n
            elif prompt.startswith("Write the docstring"):
                texts = ['    """Compute the answer the task asks for.\n    """\n'] * n
            else:  # a solution: 3 of 4 samples right, so consensus has a clear winner
                name = next(k for k in self.tasks if f"def {k}(" in prompt)
                _, sig, _, right, wrong = self.tasks[name]
                texts = [f"{sig}:\n    {wrong if j % 4 == 3 else right}\n" for j in range(n)]
            out.append([Sample(text=t, token_ids=[1, 2, 3], sum_logprob=-0.3 * (j + 1),
                               mean_logprob=-0.1 * (j + 1), num_tokens=3, finish_reason="stop",
                               prompt_index=i, sample_index=j, prompt_text=prompt + prefix)
                        for j, t in enumerate(texts)])
        return out


class ScriptedRound(RoundStep):
    def make_sampler(self, model, tokenizer, index, show_progress=False):
        self.sampler = ScriptedSampler(index)
        return self.sampler


class WatchData(Callback):
    """Records which training file and dataloader each epoch used."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen.append((trainer.datamodule.train_file, id(trainer.train_dataloader)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    tok = tiny_tokenizer()
    tiny_llama(tok, hidden_size=64).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make_trainer(root, max_epochs, loop, *extra):
    callbacks = [ModelCheckpoint(dirpath=root / "checkpoints", save_last=True), loop, *extra]
    return Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   reload_dataloaders_every_n_epochs=1, default_root_dir=root,
                   callbacks=callbacks, num_sanity_val_steps=0)


def make_loop(**kw) -> SelfTraining:
    return SelfTraining(
        round_step=ScriptedRound(RoundConfig(problems=2, tests=3, samples=4), batch_size=4),
        evaluate=PassAtKEvaluator(limit=2, max_new_tokens=8, batch_size=4),
        probe=ProbeRefitter(min_examples=4, max_epochs=5), report=ReportWriter(), **kw)


def make_parts(tiny_dir):
    torch.manual_seed(0)
    module = UCoderModule(tiny_dir, load_in_4bit=False, dtype="float32", lr=1e-3,
                          lora=LoraOptions(r=4, alpha=8, dropout=0.0), adapter_dir="")
    data = SFTDataModule(max_length=256, batch_size=2)
    return module, data, make_loop()


def test_loop_regenerates_data_between_epochs_and_reports(tiny_dir, tmp_path):
    module, data, loop = make_parts(tiny_dir)
    watch = WatchData()
    trainer = make_trainer(tmp_path, 2, loop, watch)
    trainer.fit(module, datamodule=data)

    assert [r["round"] for r in loop.rounds] == [0, 1]
    first = [json.loads(x) for x in (tmp_path / "train_round_0.jsonl").read_text().splitlines()]
    second = [json.loads(x) for x in (tmp_path / "train_round_1.jsonl").read_text().splitlines()]
    assert first and len(second) > len(first)  # round 1 added new pairs, kept round 0's
    assert {p["completion"] for p in second} - {p["completion"] for p in first}
    assert all("return a - b" not in p["completion"] for p in second)  # consensus chose right
    # Each epoch read the newest round's file through a freshly built dataloader.
    assert [f for f, _ in watch.seen] == [str(tmp_path / "train_round_0.jsonl"),
                                          str(tmp_path / "train_round_1.jsonl")]
    assert watch.seen[0][1] != watch.seen[1][1]

    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert report["pass@1_before"] is not None and report["pass@1_after"] is not None
    assert report["rounds"][0]["probe_auroc"] is not None or report["rounds"][0]["probe"]
    assert all(len(r["train_loss"]) == 1 for r in report["rounds"])
    assert (tmp_path / "plots" / "progress.png").stat().st_size > 1000
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_resumed_loop_does_not_redo_finished_rounds(tiny_dir, tmp_path):
    module, data, loop = make_parts(tiny_dir)
    make_trainer(tmp_path, 1, loop).fit(module, datamodule=data)
    assert [r["round"] for r in loop.rounds] == [0]
    round0 = (tmp_path / "round_0" / "selected.jsonl").read_text()

    module, data, loop = make_parts(tiny_dir)
    trainer = make_trainer(tmp_path, 2, loop)
    trainer.fit(module, datamodule=data, ckpt_path="last")
    # The checkpoint carried round 0; only round 1 was generated in the resumed fit.
    assert [r["round"] for r in loop.rounds] == [0, 1]
    assert (tmp_path / "round_0" / "selected.jsonl").read_text() == round0
    assert data.train_file == str(tmp_path / "train_round_1.jsonl")
    assert [h["when"] for h in loop.evals] == ["before", "epoch_0", "epoch_1"]
