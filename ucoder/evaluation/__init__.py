"""Benchmarks and test-time selection: HumanEval / MBPP-style problems, pass@k, policies.

    from ucoder.evaluation import evaluate, load_benchmark
    problems = load_benchmark("humaneval", limit=40)
    report = evaluate(sampler, problems, samples=8, policies=("greedy", "random", "ucoder"))
    report["policies"]["ucoder"]["pass@1"]

Hidden tests are used only to score; the consensus policies select on tests the model
wrote from the prompt alone. All model-written code runs in :mod:`ucoder.sandbox`.
"""

from ucoder.evaluation.benchmarks import BenchmarkError, BenchmarkProblem, load_benchmark
from ucoder.evaluation.metrics import mean_pass_at_k, pass_at_k
from ucoder.evaluation.runner import evaluate
from ucoder.evaluation.selection import CONSENSUS_POLICIES, POLICIES, check_policies

__all__ = ["CONSENSUS_POLICIES", "POLICIES", "BenchmarkError", "BenchmarkProblem",
           "check_policies", "evaluate", "load_benchmark", "mean_pass_at_k", "pass_at_k"]
