"""Lightning callbacks that turn SFT into the self-training loop.

    trainer:
      reload_dataloaders_every_n_epochs: 1
      callbacks:
        - class_path: ucoder.callbacks.RegenerateData     # a round before each epoch's data
        - class_path: ucoder.callbacks.RefitProbe         # probe on the round's consensus labels
        - class_path: ucoder.callbacks.EvaluatePassAtK    # greedy pass@1 before and after
        - class_path: ucoder.callbacks.RoundReport        # runs/<name>/report.json + plots/

Each keeps its state in ``state_dict()`` so a resumed fit continues where it stopped.
"""

from ucoder.callbacks.base import RoundListener
from ucoder.callbacks.evaluate import EvaluatePassAtK
from ucoder.callbacks.probe import RefitProbe
from ucoder.callbacks.regenerate import RegenerateData
from ucoder.callbacks.report import RoundReport

__all__ = ["EvaluatePassAtK", "RefitProbe", "RegenerateData", "RoundListener", "RoundReport"]
