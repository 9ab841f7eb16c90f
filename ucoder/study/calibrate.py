"""A short calibration run that says, before a study starts, how long it will take."""

from __future__ import annotations

import time

from ucoder.ipc.config import RoundConfig

CALIBRATION_PROBLEMS = 8
FIT_EPOCH_S = 120.0  # assumed, not measured: a study's fits train on tens of pairs


def round_tokens(config: RoundConfig) -> int:
    """The most tokens one round can sample (every stage at its length cap)."""
    attempts = int(config.problems * config.problem_attempts)
    per_problem = (config.rating_tokens + config.skeleton_tokens + config.test_tokens
                   + config.samples * config.solution_tokens)
    return attempts * config.problem_tokens + config.problems * per_problem


def find_round_config(fit: dict) -> RoundConfig:
    """The round settings of the loop callback in a `ucoder fit` config (defaults if none)."""
    from ucoder.ipc.config import round_config_from_dict

    for callback in (fit.get("trainer") or {}).get("callbacks") or []:
        args = callback.get("init_args") if isinstance(callback, dict) else None
        found = _find_key(args, "round_config")
        if found is not None:
            return round_config_from_dict(found)
    return RoundConfig()


def _find_key(tree, key):
    if isinstance(tree, dict):
        if isinstance(tree.get(key), dict):
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def calibrate(study, fit: dict, options: dict, problems) -> dict:
    """Greedy-decode a few benchmark problems with the base; extrapolate every step."""
    from ucoder.evaluation.programs import generation_inputs
    from ucoder.generation import Sampler
    from ucoder.models import load_model

    model, tokenizer = load_model(options["name"], load_in_4bit=options["load_in_4bit"],
                                  quant=options["quant"], dtype=options["dtype"])
    sampler = Sampler(model, tokenizer, batch_size=study.eval_batch_size, show_progress=False)
    few = list(problems)[:CALIBRATION_PROBLEMS]
    prompts, prefix, stop = generation_inputs(few, sampler.chat)
    start = time.perf_counter()
    out = sampler.sample(prompts, 1, temperature=0.0, max_new_tokens=study.max_new_tokens,
                         prefix=prefix, stop=list(stop), seed=study.seed)
    seconds = time.perf_counter() - start
    tokens = sum(g[0].num_tokens for g in out)
    rate = tokens / max(seconds, 1e-6)
    fill = tokens / (len(few) * study.max_new_tokens)
    evaluations = 1 + study.rounds + len(study.ablation)
    eval_s = len(problems) * tokens / max(len(few), 1) / rate
    round_s = round_tokens(find_round_config(fit)) * fill / rate
    fit_s = FIT_EPOCH_S * study.epochs_per_round * (study.rounds + len(study.ablation))
    total = evaluations * eval_s + study.rounds * round_s + fit_s
    return {"tokens_per_s": round(rate, 1), "fill": round(fill, 3),
            "eval_s": round(eval_s), "round_s": round(round_s), "fit_s": round(fit_s),
            "total_s": round(total),
            "basis": f"{len(few)} greedy problems at {rate:.0f} tokens/s; rounds at the "
                     f"same rate and {fill:.0%} of their length caps; fits assumed "
                     f"{FIT_EPOCH_S:.0f} s per epoch"}
