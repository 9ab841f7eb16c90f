"""What the loop's parts share: the logger and small checks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("ucoder.loop")


def loop_dir(trainer, out_dir: str | None) -> Path:
    """``out_dir`` or the Trainer's ``default_root_dir``: where rounds and reports go."""
    return Path(out_dir if out_dir is not None else trainer.default_root_dir)


def check_every(every_n_epochs: int, option: str = "every_n_epochs") -> None:
    """Refuse anything but a positive integer, naming ``option``."""
    if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
        raise ValueError(f"{option}={every_n_epochs!r} is not allowed: "
                         "expected an integer >= 1")


def relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the loop's directory when inside it (a report that reads the
    same wherever the run lives), else as given."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


class GenerationModel:
    """The model a loop step generates with (a context manager): the training model, or
    (``generation="merged_copy"``) a merged copy of it made on first use and dropped when
    the step ends."""

    def __init__(self, pl_module, generation: str):
        self.pl_module, self.generation, self._copy = pl_module, generation, None

    @property
    def model(self):
        if self.generation == "training_weights":
            return self.pl_module.model
        if self._copy is None:
            from ucoder.models import merged_generation_copy

            self._copy = merged_generation_copy(self.pl_module.model)
        return self._copy

    def __enter__(self) -> GenerationModel:
        return self

    def __exit__(self, *exc) -> None:
        if self._copy is not None:
            self._copy = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
