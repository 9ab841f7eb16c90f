"""SFTDataModule: masking, length rule, bad input, grouping/packing, switching files."""

from __future__ import annotations

import json

import pytest
import torch

from tests.tiny import tiny_tokenizer
from ucoder.data import (
    IGNORE,
    SFTDataError,
    SFTDataModule,
    collate,
    group_batches,
    read_pairs,
    tokenize_pairs,
)
from ucoder.jsonl import read_json, write_json, write_jsonl

PAIRS = [{"prompt": f"Write f{i}.", "completion": "def f():\n    return " + "1 + " * i + "1\n",
          "extra": i} for i in range(12)]


def _dm(tmp_path, rows=PAIRS, **kw) -> SFTDataModule:
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    dm = SFTDataModule(train_file=str(path), **kw)
    dm.set_tokenizer(tiny_tokenizer())
    dm.setup("fit")
    return dm


def _learned_text(tok, ex) -> str:
    return tok.decode([t for t in ex.labels if t != IGNORE])


def test_chat_format_masks_the_prompt_and_learns_the_assistant_turn():
    tok = tiny_tokenizer()
    (ex,), stats = tokenize_pairs([(1, "Add two numbers.", "def add(a, b): return a + b")], tok)
    assert stats.kept == 1
    assert _learned_text(tok, ex) == "def add(a, b): return a + b<|im_end|>\n"
    head = tok.decode(ex.input_ids[: ex.labels.index(next(t for t in ex.labels if t != IGNORE))])
    assert head.endswith("<|im_start|>user\nAdd two numbers.<|im_end|>\n<|im_start|>assistant\n")


def test_answer_prefix_trains_in_the_exact_context_the_sampler_prefills():
    from tests.tiny import tiny_llama
    from ucoder.generation import Sampler
    from ucoder.ipc.prompts import SOLUTION_PREFIX

    tok = tiny_tokenizer()
    code = "def add(a, b):\n    return a + b"
    (ex,), _ = tokenize_pairs([(1, "Add two numbers.", code)], tok,
                              answer_prefix=SOLUTION_PREFIX, answer_suffix="\n```")
    assert _learned_text(tok, ex) == code + "\n```<|im_end|>\n"
    start = ex.labels.index(next(t for t in ex.labels if t != IGNORE))
    sampler = Sampler(tiny_llama(tok), tok, chat=True, show_progress=False)
    context = sampler.encode_prompt(sampler.format_prompt("Add two numbers.", SOLUTION_PREFIX))
    assert ex.input_ids[:start] == context


def test_plain_format_learns_completion_and_eos():
    tok = tiny_tokenizer()
    (ex,), _ = tokenize_pairs([(1, "def f(x):\n", "    return x\n")], tok, format="plain")
    assert _learned_text(tok, ex) == "    return x\n<|endoftext|>"
    assert ex.input_ids[0] == tok.bos_token_id and ex.labels[0] == IGNORE


def test_length_rule_truncates_completions_and_drops_long_prompts():
    tok = tiny_tokenizer()
    pairs = [(1, "short", "x = 1\n" * 50), (2, "long prompt " * 80, "y"), (3, "ok", "z")]
    examples, stats = tokenize_pairs(pairs, tok, max_length=64)
    assert (stats.kept, stats.truncated, stats.dropped, stats.dropped_lines) == (2, 1, 1, [2])
    assert all(len(e.input_ids) <= 64 for e in examples)
    _, stats = tokenize_pairs(pairs, tok, max_length=64, overlong="drop")
    assert (stats.kept, stats.dropped, stats.dropped_lines) == (1, 2, [1, 2])


def test_module_counts_dropped_examples_and_refuses_when_none_left(tmp_path):
    rows = PAIRS[:3] + [{"prompt": "p " * 300, "completion": "c"}]
    dm = _dm(tmp_path, rows, max_length=64)
    assert dm.stats["train"].dropped == 1 and dm.stats["train"].kept == 3
    with pytest.raises(SFTDataError, match="every example was dropped by max_length=4"):
        _dm(tmp_path, rows, max_length=4)


@pytest.mark.parametrize("content, match", [
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n',
     r"sft.jsonl:2: not valid JSON"),
    ('{"prompt": "a", "completion": "b"}\n\n[1, 2]\n', r"sft.jsonl:3: expected a JSON object"),
    ('{"prompt": "a"}\n', r"sft.jsonl:1: field 'completion' must be a string"),
    ('{"prompt": "a", "completion": "  "}\n', r"sft.jsonl:1: 'completion' is empty"),
    ("", r"has no examples \(the file is empty\)"),
])
def test_bad_jsonl_names_the_line(tmp_path, content, match):
    path = tmp_path / "sft.jsonl"
    path.write_text(content)
    with pytest.raises(SFTDataError, match=match):
        read_pairs(path)


def test_read_json_gives_none_for_a_missing_file_and_names_a_broken_one(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1, 2]})
    (tmp_path / "b.json").write_text('{"x": ')
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    assert read_json(tmp_path / "c.json") is None and read_json(tmp_path / "c.json", {}) == {}
    # A corrupt file is an error naming it (issue 13), not a None that skips a check.
    with pytest.raises(ValueError, match=r"b\.json:1: not valid JSON"):
        read_json(tmp_path / "b.json")


def test_bad_options_name_the_option(tmp_path):
    with pytest.raises(SFTDataError, match="format='json'"):
        SFTDataModule(format="json")
    with pytest.raises(SFTDataError, match="batch_size=0"):
        SFTDataModule(batch_size=0)
    dm = _dm(tmp_path)
    dm.set_train_file(tmp_path / "missing.jsonl")
    with pytest.raises(SFTDataError, match="missing.jsonl' does not exist"):
        dm.train_dataloader()


def test_group_batches_cover_every_index_and_cut_padding():
    lengths = [(i * 37) % 100 + 1 for i in range(200)]
    grouped = group_batches(lengths, 8, seed=3)
    assert sorted(i for b in grouped for i in b) == list(range(200))
    assert grouped == group_batches(lengths, 8, seed=3)  # same on every rank

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = group_batches(lengths, 8, group_by_length=False, seed=3)
    assert padded(grouped) < 0.7 * padded(plain)


def test_batches_pad_right_and_pack_without_padding(tmp_path):
    dm = _dm(tmp_path, batch_size=4)
    batch = dm.train_dataloader().dataset[0]
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    lengths = batch["attention_mask"].sum(1)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    examples = [dm._dataset("train").examples[i] for i in dm._dataset("train").batches[0]]
    packed = collate(examples, pad_id=0, pack=True)
    assert packed["input_ids"].shape == (1, int(lengths.sum()))
    pos = packed["position_ids"][0]
    assert (pos == 0).sum() == len(examples)  # positions restart for every example
    starts = torch.nonzero(pos == 0).flatten()
    assert (packed["labels"][0, starts] == IGNORE).all()  # no target across a boundary


def test_set_train_file_switches_the_data(tmp_path):
    dm = _dm(tmp_path, batch_size=4)
    assert len(dm.train_dataloader()) == 3
    new = write_jsonl(tmp_path / "round_1.jsonl", PAIRS[:4])
    dm.set_train_file(new)
    assert len(dm.train_dataloader()) == 1
    assert dm.state_dict() == {"train_file": str(new)}


def test_tokenizer_is_required(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n")
    with pytest.raises(SFTDataError, match="no tokenizer"):
        SFTDataModule(train_file=str(path)).setup("fit")
