"""The settings of one IPC round (:class:`RoundConfig`) and their YAML form.

The defaults are sized for the embedded 135M model on 2 CPU cores: a 12-problem round
costs minutes. Tests default to *inputs only* with the ``output`` signature: a small
model's expected values are mostly wrong, and an assert it got wrong would fail every
right solution; the calls themselves still separate programs by behaviour
(``test_form: asserts`` with ``selection.signature: pass`` is the paper's setting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ucoder.ipc.consensus import SelectionConfig

TEST_FORMS = ("asserts", "inputs", "both")
RATING_MODES = ("filter", "report")


@dataclass
class RoundConfig:
    """Everything a round does, stage by stage.

    Attributes:
        problems: problems kept after the rating (at most); the problems stage keeps
            enough more for the rating to drop its share.
        tests: tests per problem (problem examples first, then the model's).
        samples: candidates per problem.
        problem_attempts: problems asked for per wanted problem (a small model wastes some).
        problems_per_prompt: problems sampled from each problem prompt (its prefill is
            shared by them).
        problem_kinds: each problem prompt also names what the function returns, so
            prompts on one topic ask for different functions.
        min_rating: expected self-rated quality (1-10) below which a problem drops
            whatever its rank (:mod:`ucoder.ipc.rating`).
        rating_mode: ``filter`` (drop by the rating) or ``report`` (drop nothing, record
            each problem's would-drop verdict in ``ratings.jsonl``).
        rating_drop_share: share of a round's problems, the lowest-rated, that the rating
            drops (ties with the cut are kept).
        min_tests: tests a problem needs to go on to sampling.
        skeleton_by_model: the model writes the docstring (else derived from the problem).
        test_form: ``asserts`` (as written), ``inputs`` (their calls only) or ``both``.
        mutated_inputs: extra inputs per problem made by mutating the literal arguments
            of the model's calls (:mod:`ucoder.ipc.mutate`); not for ``asserts``.
        problem_temperature, test_temperature, solution_temperature, top_p: sampling.
        problem_tokens, rating_tokens, skeleton_tokens, test_tokens, solution_tokens:
            max_new_tokens per stage (``rating_tokens`` is unused since the rating reads
            token probabilities; kept so existing configs load).
        timeout: sandbox wall-clock seconds per candidate (all its tests).
        selection: how one candidate per problem is chosen.
    """

    problems: int = 12
    tests: int = 8
    samples: int = 8
    problem_attempts: float = 1.5
    problems_per_prompt: int = 1
    problem_kinds: bool = False
    min_rating: float = 3.0
    rating_mode: str = "filter"
    rating_drop_share: float = 0.25
    min_tests: int = 2
    skeleton_by_model: bool = True
    test_form: str = "inputs"
    mutated_inputs: int = 6
    problem_temperature: float = 0.8
    test_temperature: float = 0.8
    solution_temperature: float = 0.8
    top_p: float = 0.95
    problem_tokens: int = 96
    rating_tokens: int = 16
    skeleton_tokens: int = 64
    test_tokens: int = 72
    solution_tokens: int = 128
    timeout: float = 5.0
    selection: SelectionConfig = field(
        default_factory=lambda: SelectionConfig(signature="output"))

    def __post_init__(self):
        if isinstance(self.selection, dict):
            self.selection = selection_from_dict(self.selection)
        for name in ("problems", "tests", "samples", "min_tests", "mutated_inputs",
                     "problems_per_prompt", "problem_tokens",
                     "rating_tokens", "skeleton_tokens", "test_tokens", "solution_tokens"):
            value = getattr(self, name)
            low = 0 if name in ("min_tests", "mutated_inputs") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not allowed; use an integer >= {low}")
        for name, low, high in (("problem_attempts", 1.0, 20.0), ("min_rating", 0.0, 10.0),
                                ("problem_temperature", 0.0, 5.0), ("top_p", 1e-6, 1.0),
                                ("test_temperature", 0.0, 5.0), ("timeout", 0.1, 600.0),
                                ("solution_temperature", 0.0, 5.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise ValueError(f"{name}={value!r} is not allowed; use a number in "
                                 f"[{low:g}, {high:g}]")
        if self.rating_mode not in RATING_MODES:
            raise ValueError(f"rating_mode={self.rating_mode!r} is not allowed; choose one "
                             f"of {', '.join(RATING_MODES)}")
        if isinstance(self.rating_drop_share, bool) or not isinstance(
                self.rating_drop_share, (int, float)) or not 0 <= self.rating_drop_share < 1:
            raise ValueError(f"rating_drop_share={self.rating_drop_share!r} is not allowed; "
                             "use a number in [0, 1)")
        if self.test_form not in TEST_FORMS:
            raise ValueError(f"test_form={self.test_form!r} is not allowed; choose one of "
                             f"{', '.join(TEST_FORMS)}")
        for name in ("skeleton_by_model", "problem_kinds"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; "
                                 "use true or false")
        if not isinstance(self.selection, SelectionConfig):
            raise ValueError(f"selection={self.selection!r} is not allowed; use a mapping of "
                             "SelectionConfig fields")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_keys(data: dict, cls, where: str) -> None:
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(allowed)}")


def selection_from_dict(data: dict) -> SelectionConfig:
    _check_keys(data, SelectionConfig, "selection")
    return SelectionConfig(**data)


def round_config_from_dict(data: dict, where: str = "round config") -> RoundConfig:
    """A :class:`RoundConfig` from a mapping; unknown keys raise, naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of RoundConfig fields, got "
                         f"{type(data).__name__}")
    _check_keys(data, RoundConfig, where)
    return RoundConfig(**data)  # a selection mapping is checked by __post_init__


def load_round_config(path: str | Path, **overrides) -> RoundConfig:
    """Read a YAML file of RoundConfig fields; ``overrides`` (not None) win."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise ValueError(f"config={str(path)!r} cannot be read: {err}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"config={str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config={str(path)!r}: expected a mapping of RoundConfig fields")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return round_config_from_dict(data, where=f"config {path}")
