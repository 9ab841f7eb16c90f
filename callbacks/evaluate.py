"""PassAtKEvaluator: greedy pass@1 of a model on the first problems of a benchmark."""

from __future__ import annotations

from ucoder.callbacks.base import check_every


class PassAtKEvaluator:
    """Greedy pass@1 on the first ``limit`` problems of a benchmark.

    Usable alone (``solved(model, tokenizer)``); :class:`~ucoder.callbacks.SelfTraining`
    calls it before training and after every ``every_n_epochs``-th epoch, on every rank
    with that rank's share of the problems, and sums the counts.

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
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit={limit!r} is not allowed: expected an integer >= 1")
        self.benchmark, self.limit = benchmark, limit
        self.every_n_epochs = every_n_epochs
        self.max_new_tokens, self.batch_size, self.timeout = max_new_tokens, batch_size, timeout
        self._problems: list | None = None

    @property
    def problems(self) -> list:
        """The benchmark's first ``limit`` problems (loaded once)."""
        if self._problems is None:
            from ucoder.evaluation import load_benchmark

            self._problems = load_benchmark(self.benchmark, limit=self.limit)
        return self._problems

    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` (0-based) is an evaluation point."""
        return (epoch + 1) % self.every_n_epochs == 0

    def solved(self, model, tokenizer, *, rank: int = 0, world: int = 1,
               show_progress: bool = False) -> int:
        """How many of this rank's problems (every ``world``-th from ``rank``) greedy
        decoding solves."""
        from ucoder.evaluation import evaluate
        from ucoder.generation import Sampler

        mine = self.problems[rank::world]
        if not mine:
            return 0
        sampler = Sampler(model, tokenizer, batch_size=self.batch_size,
                          show_progress=show_progress)
        report = evaluate(sampler, mine, samples=0, policies=("greedy",),
                          max_new_tokens=self.max_new_tokens, timeout=self.timeout,
                          progress=False, benchmark=self.benchmark)
        return int(report["policies"]["greedy"]["solved"])
