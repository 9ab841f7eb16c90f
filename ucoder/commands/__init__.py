"""One module per ``ucoder`` subcommand; :mod:`ucoder.cli` dispatches to them."""

from __future__ import annotations

import logging


def show_info_logs() -> None:
    """Print ucoder's INFO lines (rounds, data counts, saved adapters) on stderr once."""
    logger = logging.getLogger("ucoder")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
