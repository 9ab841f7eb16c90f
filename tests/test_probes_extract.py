"""Feature extraction on tiny random models of two families (Llama, GPT-2)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_gpt2, tiny_llama, tiny_tokenizer
from ucoder.probes import extract_features

PROMPTS = [
    "def add(a, b):\n",
    "Write a function that returns the sum of a list of numbers.\ndef total(xs):\n",
    "x",
    "class Stack:\n",
]
COMPLETIONS = ["    return a + b\n", "    return sum(xs)", "", "    pass"]
POSITIONS = ["last_completion", "last_prompt", "mean_completion"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def family(request):
    tok = tiny_tokenizer(add_bos=request.param == "llama")
    model = tiny_llama(tok) if request.param == "llama" else tiny_gpt2(tok)
    return model, tok


def _manual(model, tok, prompt, completion, layer, position):
    """The reference: one unpadded forward over prompt ids + completion ids."""
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h = model(torch.tensor([p + c]), output_hidden_states=True).hidden_states[layer][0]
    if position == "last_prompt" or not c:
        return h[len(p) - 1]
    if position == "last_completion":
        return h[-1]
    return h[len(p) :].mean(0)


@pytest.mark.parametrize("position", POSITIONS)
def test_matches_unbatched_forward_with_left_and_right_padding(family, position):
    model, tok = family
    expected = torch.stack(
        [
            torch.stack([_manual(model, tok, p, c, layer, position) for layer in (0, 1, -1)])
            for p, c in zip(PROMPTS, COMPLETIONS)
        ]
    )
    for side in ("right", "left"):
        tok.padding_side = side
        got = extract_features(model, tok, PROMPTS, COMPLETIONS, [0, 1, -1], position, 3)
        assert got.shape == (4, 3, model.config.hidden_size) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    tok.padding_side = "right"


def test_positions_differ_and_layers_differ(family):
    model, tok = family
    last = extract_features(model, tok, PROMPTS[:2], COMPLETIONS[:2], [-1, 0], "last_completion")
    first = extract_features(model, tok, PROMPTS[:2], COMPLETIONS[:2], [-1], "last_prompt")
    assert not torch.allclose(last[:, 0], first[:, 0])
    assert not torch.allclose(last[:, 0], last[:, 1])


def test_completion_token_ids_equal_text(family):
    model, tok = family
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in COMPLETIONS]
    by_text = extract_features(model, tok, PROMPTS, COMPLETIONS)
    by_ids = extract_features(model, tok, PROMPTS, ids)
    torch.testing.assert_close(by_text, by_ids)


def test_no_gradients_and_training_mode_restored(family):
    model, tok = family
    model.train()
    feats = extract_features(model, tok, PROMPTS[:1], COMPLETIONS[:1])
    assert not feats.requires_grad
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_bos_in_prompt_is_not_doubled():
    tok = tiny_tokenizer(add_bos=True)
    model = tiny_llama(tok)
    with_bos = extract_features(model, tok, [tok.bos_token + "def f():\n"], ["  pass"])
    plain = extract_features(model, tok, ["def f():\n"], ["  pass"])
    torch.testing.assert_close(with_bos, plain)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": [3]}, "layers: index 3 is out of range .* 2 layers"),
        ({"layers": [-4]}, "layers: index -4"),
        ({"position": "first"}, "position: 'first' is not one of"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_name_the_option(family, kwargs, match):
    model, tok = family
    with pytest.raises(ValueError, match=match):
        extract_features(model, tok, PROMPTS[:1], COMPLETIONS[:1], **kwargs)


def test_mismatched_lengths(family):
    model, tok = family
    with pytest.raises(ValueError, match="differ in length"):
        extract_features(model, tok, PROMPTS, COMPLETIONS[:2])


def test_four_bit_model_on_cpu(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden_size=64)
    model.save_pretrained(tmp_path)
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    try:
        q = AutoModelForCausalLM.from_pretrained(
            tmp_path, quantization_config=config, device_map="cpu"
        )
    except Exception as err:  # pragma: no cover - depends on the bitsandbytes build
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot quantize on this CPU: {err}")
    assert type(q.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    got = extract_features(q, tok, PROMPTS, COMPLETIONS, layers=[-1, 1])
    ref = extract_features(model, tok, PROMPTS, COMPLETIONS, layers=[-1, 1])
    assert got.shape == ref.shape and torch.isfinite(got).all()
    # Quantisation perturbs the states but keeps them close to the full-precision ones.
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), ref.flatten(1))
    assert (cos > 0.9).all(), cos


def test_probes_package_imports_nothing_from_ucoder():
    import ast
    from pathlib import Path

    import ucoder.probes as probes

    for path in Path(probes.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            # its own modules install as ucoder.probes.*; nothing else of ucoder is allowed
            assert not any(n.split(".")[0] == "ucoder" and not n.startswith("ucoder.probes")
                           for n in names), path


def test_several_positions_in_one_pass_equal_separate_calls(family):
    from ucoder.probes import extract_positions

    model, tok = family
    both = extract_positions(model, tok, PROMPTS, COMPLETIONS, [0, -1],
                             ["last_completion", "mean_completion"], batch_size=2)
    for position in ("last_completion", "mean_completion"):
        alone = extract_features(model, tok, PROMPTS, COMPLETIONS, [0, -1], position)
        assert torch.allclose(both[position], alone, atol=1e-5)
    assert not torch.allclose(both["last_completion"], both["mean_completion"])
