"""What the loop's callbacks share: the round-end notification and small helpers."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("ucoder.loop")


class RoundListener(Callback):
    """A callback that :class:`~ucoder.callbacks.RegenerateData` tells about every finished round.

    ``on_round_end`` runs on every rank after the round's merged files exist, before the
    DataModule is pointed at the new data.
    """

    def on_round_end(self, trainer, pl_module, round_index: int, round_dir: Path,
                     stats: dict) -> None:
        """Called with the round's number, directory and ``stats.json`` content."""


def find_callback(trainer, cls):
    """The first callback of type ``cls`` in ``trainer.callbacks`` (or ``None``)."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


def loop_dir(trainer, out_dir: str | None) -> Path:
    """``out_dir`` or the Trainer's ``default_root_dir``: where rounds and reports go."""
    return Path(out_dir if out_dir is not None else trainer.default_root_dir)


def check_every(every_n_epochs: int) -> None:
    if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
        raise ValueError(f"every_n_epochs={every_n_epochs!r} is not allowed: "
                         "expected an integer >= 1")
