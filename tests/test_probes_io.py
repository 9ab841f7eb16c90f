"""Save/load, compatibility checks and the scorer, on two model families."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer
from ucoder.probes import (
    ProbeCompatibilityError,
    ProbeScorer,
    ProbeWeightsWarning,
    extract_features,
    fit_probe,
    load_probe,
    model_fingerprint,
    save_probe,
    weights_fingerprint,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"def f{i}(x):\n" for i in range(12) for _ in range(3)]
COMPLETIONS = ["    return x + 1", "    pass", "    x = 1"] * 12
LABELS = [c.strip().startswith("return") for c in COMPLETIONS]
GROUPS = [i // 3 for i in range(36)]


def _fitted(model, tok, kind="linear", layer=-1):
    feats = extract_features(model, tok, PROMPTS, COMPLETIONS, layers=[layer])
    probe, _ = fit_probe(feats[:, 0], LABELS, GROUPS, kind=kind, max_epochs=5, layer=layer)
    return probe


@pytest.fixture(scope="module")
def llama():
    tok = tiny_tokenizer()
    return tiny_llama(tok), tok


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_roundtrip_same_scores_and_metadata(llama, tmp_path, kind):
    model, tok = llama
    probe = _fitted(model, tok, kind, layer=1)
    save_probe(probe, tmp_path, model=model, base_model="tiny-llama")
    meta = json.loads((tmp_path / "probe.json").read_text())
    assert meta["kind"] == kind and meta["hidden_size"] == 32 and meta["layer"] == 1
    assert meta["position"] == "last_completion" and meta["base_model"] == "tiny-llama"
    assert meta["fingerprint"] == model_fingerprint(model)
    loaded = load_probe(tmp_path, model)
    before = ProbeScorer(model, tok, probe).score(PROMPTS, COMPLETIONS)
    after = ProbeScorer(model, tok, loaded).score(PROMPTS, COMPLETIONS)
    assert before == after and all(0.0 <= s <= 1.0 for s in after)


def test_scorer_works_on_gpt2_family(tmp_path):
    tok = tiny_tokenizer(add_bos=False)
    model = tiny_gpt2(tok, hidden_size=48)
    probe = _fitted(model, tok)
    save_probe(probe, tmp_path, model=model)
    scorer = ProbeScorer(model, tok, load_probe(tmp_path, model))
    scores = scorer.score(PROMPTS[:4], COMPLETIONS[:4])
    assert len(scores) == 4 and ProbeScorer(model, tok, probe).score([], []) == []


def test_wrong_hidden_size_is_a_clear_error(llama, tmp_path):
    model, tok = llama
    save_probe(_fitted(model, tok), tmp_path, model=model)
    other = tiny_gpt2(tiny_tokenizer(add_bos=False), hidden_size=48)
    with pytest.raises(ProbeCompatibilityError, match="hidden size 32 .* hidden size 48"):
        load_probe(tmp_path, other)
    with pytest.raises(ProbeCompatibilityError, match="hidden size"):
        ProbeScorer(other, tok, load_probe(tmp_path))
    with pytest.raises(ProbeCompatibilityError, match="hidden size 48 does not match"):
        save_probe(_fitted(model, tok), tmp_path / "x", model=other)


def test_other_architecture_same_width_needs_strict_false(llama, tmp_path):
    model, tok = llama
    save_probe(_fitted(model, tok), tmp_path, model=model)
    deeper = tiny_llama(tok, num_layers=3)
    with pytest.raises(ProbeCompatibilityError, match="strict=False"):
        load_probe(tmp_path, deeper)
    assert load_probe(tmp_path, deeper, strict=False).hidden_size == 32


def test_layer_out_of_range_for_model(llama, tmp_path):
    model, tok = llama
    probe = _fitted(model, tok)
    probe.meta["layer"] = 5
    save_probe(probe, tmp_path)
    with pytest.raises(ProbeCompatibilityError, match="reads layer 5, but the model has only 2"):
        load_probe(tmp_path, model)


def test_missing_probe_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="probe.json"):
        load_probe(tmp_path / "nope")


SCORE_IN_NEW_PROCESS = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[4]))  # as many as the parent: the same float sums
from transformers import AutoModelForCausalLM, AutoTokenizer
from ucoder.probes import ProbeScorer, load_probe
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
data = json.load(open(sys.argv[3]))
probe = load_probe(sys.argv[2], model)
print(json.dumps(ProbeScorer(model, tok, probe).score(data["prompts"], data["completions"])))
"""


@pytest.mark.integration  # a fresh interpreter imports torch + transformers (~10 s)
def test_saved_probe_scores_identically_in_a_new_process(llama, tmp_path):
    model, tok = llama
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    probe = _fitted(model, tok, "mlp")
    save_probe(probe, tmp_path / "probe", model=model)
    expected = ProbeScorer(model, tok, probe).score(PROMPTS, COMPLETIONS)
    data = {"prompts": PROMPTS, "completions": COMPLETIONS}
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = subprocess.run(
        [sys.executable, "-c", SCORE_IN_NEW_PROCESS, str(tmp_path / "model"),
         str(tmp_path / "probe"), str(tmp_path / "data.json"), str(torch.get_num_threads())],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == expected


def test_probe_state_is_float32_and_no_metric_state(llama, tmp_path):
    model, tok = llama
    save_probe(_fitted(model, tok), tmp_path)
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "probe.safetensors"))
    assert {"head.feature_mean", "head.feature_std", "pos_weight"} <= set(state)
    assert all(v.dtype == torch.float32 for v in state.values())


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


def test_weights_fingerprint_sees_lora_weights_and_only_them(tmp_path):
    from peft import PeftModel

    tok = tiny_tokenizer()
    model = _lora(tiny_llama(tok))
    before = weights_fingerprint(model)
    model(tok("def f(x):", return_tensors="pt").input_ids)  # using it changes nothing
    assert weights_fingerprint(model) == before
    model.save_pretrained(tmp_path / "adapter")  # the same weights in a new object
    reloaded = PeftModel.from_pretrained(tiny_llama(tok), tmp_path / "adapter")
    assert weights_fingerprint(reloaded) == before
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(not p.any() for p in lora_b)  # LoRA starts as a no-op
    with torch.no_grad():
        lora_b[-1].add_(1e-3)  # one step of training, on one adapter matrix
    changed = weights_fingerprint(model)
    assert changed != before and model_fingerprint(model) == model_fingerprint(reloaded)
    with torch.no_grad():
        lora_b[-1].zero_()
    assert weights_fingerprint(model) == before


def test_weights_fingerprint_hashes_4bit_weights_as_stored():
    import bitsandbytes as bnb

    def quantized(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False,
                                         quant_type="nf4")
        return torch.nn.Sequential(layer).to("cpu")  # quantises: packed uint8

    four_bit = quantized(0)
    assert four_bit[0].weight.dtype == torch.uint8
    assert weights_fingerprint(four_bit) == weights_fingerprint(quantized(0))
    assert weights_fingerprint(four_bit) != weights_fingerprint(quantized(1))


def test_same_architecture_other_weights_warns(llama, tmp_path):
    model, tok = llama
    save_probe(_fitted(model, tok), tmp_path, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe's own model: no warning at all
        load_probe(tmp_path, model)
    other = tiny_llama(tok, seed=1)
    with pytest.warns(ProbeWeightsWarning, match="other weights of this architecture"):
        probe = load_probe(tmp_path, other)
    with pytest.warns(ProbeWeightsWarning):
        ProbeScorer(other, tok, probe)
    with pytest.warns(ProbeWeightsWarning):  # the loop's case: the model after training
        load_probe(tmp_path, _trained(model))


def _trained(model):
    import copy

    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.model.layers[0].self_attn.q_proj.weight.mul_(1.01)
    return trained


def test_other_family_is_refused_with_what_differs(llama, tmp_path):
    model, tok = llama
    save_probe(_fitted(model, tok), tmp_path, model=model)
    gpt2 = tiny_gpt2(tiny_tokenizer(add_bos=False), hidden_size=32)  # same width
    with pytest.raises(ProbeCompatibilityError, match="model_type 'llama' -> 'gpt2'"):
        load_probe(tmp_path, gpt2)
