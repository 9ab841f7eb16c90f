"""EvaluatePassAtK: greedy pass@1 on a benchmark subset before training and after rounds."""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from ucoder.callbacks.base import check_every, log


class EvaluatePassAtK(Callback):
    """Greedy pass@1 of the weights being trained, on the first ``limit`` problems.

    Runs at fit start (the model before any training: ``before``) and at the end of every
    ``every_n_epochs``-th epoch, logging ``eval/pass@1``. Under DDP each rank evaluates
    its share of the problems and the solved counts are summed.

    Args:
        benchmark: ``humaneval`` or an MBPP-style JSONL path.
        limit: number of problems (the first ones of the benchmark).
        every_n_epochs: evaluate after every this many epochs.
        max_new_tokens: length cap of a completion.
        batch_size: rows decoded together.
        timeout: sandbox wall-clock seconds per problem.
    """

    def __init__(self, benchmark: str = "humaneval", limit: int = 20, every_n_epochs: int = 1,
                 max_new_tokens: int = 384, batch_size: int = 32, timeout: float = 5.0):
        check_every(every_n_epochs)
        if limit < 1:
            raise ValueError(f"limit={limit!r} is not allowed: expected >= 1")
        self.benchmark, self.limit = benchmark, limit
        self.every_n_epochs = every_n_epochs
        self.max_new_tokens, self.batch_size, self.timeout = max_new_tokens, batch_size, timeout
        self.history: list[dict[str, Any]] = []  # {"when": "before"|"epoch_<k>", ...}
        self._problems = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        from ucoder.evaluation import load_benchmark

        # Loaded here so a wrong benchmark name fails before the model loads.
        self._problems = load_benchmark(self.benchmark, limit=self.limit)

    def on_fit_start(self, trainer, pl_module) -> None:
        if not any(h["when"] == "before" for h in self.history):
            result = self._evaluate(trainer, pl_module, "before")
            if trainer.logger is not None and trainer.is_global_zero:
                trainer.logger.log_metrics({"eval/pass@1": result["pass@1"]},
                                           step=trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        when = f"epoch_{trainer.current_epoch}"
        done = next((h for h in self.history if h["when"] == when), None)
        result = done or self._evaluate(trainer, pl_module, when)
        pl_module.log("eval/pass@1", result["pass@1"], prog_bar=True, rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def _evaluate(self, trainer, pl_module, when: str) -> dict[str, Any]:
        from ucoder.evaluation import evaluate
        from ucoder.generation import Sampler

        world, rank = trainer.world_size, trainer.global_rank
        mine = self._problems[rank::world]
        start = time.perf_counter()
        sampler = Sampler(pl_module.model, pl_module.tokenizer, batch_size=self.batch_size,
                          show_progress=trainer.is_global_zero)
        solved = 0
        if mine:
            report = evaluate(sampler, mine, samples=0, policies=("greedy",),
                              max_new_tokens=self.max_new_tokens, timeout=self.timeout,
                              progress=False, benchmark=self.benchmark)
            solved = int(report["policies"]["greedy"]["solved"])
        if world > 1:
            solved = int(trainer.strategy.reduce(torch.tensor(float(solved)),
                                                 reduce_op="sum").item())
        result = {"when": when, "epoch": trainer.current_epoch, "step": trainer.global_step,
                  "pass@1": solved / len(self._problems), "solved": solved,
                  "problems": len(self._problems),
                  "seconds": round(time.perf_counter() - start, 1)}
        self.history.append(result)
        log.info("eval %s: greedy pass@1 %.3f (%d/%d) on %s", when, result["pass@1"], solved,
                 len(self._problems), self.benchmark)
        return result
