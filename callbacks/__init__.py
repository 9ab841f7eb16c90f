"""Lightning callbacks that turn SFT into the self-training loop.

    trainer:
      reload_dataloaders_every_n_epochs: 1
      callbacks:
        - class_path: callbacks.RegenerateData     # a round before each epoch's data
        - class_path: callbacks.RefitProbe         # probe on the round's consensus labels
        - class_path: callbacks.EvaluatePassAtK    # greedy pass@1 before and after
        - class_path: callbacks.RoundReport        # runs/<name>/report.json + plots/

Each keeps its state in ``state_dict()`` so a resumed fit continues where it stopped.
"""

from callbacks.base import RoundListener
from callbacks.evaluate import EvaluatePassAtK
from callbacks.probe import RefitProbe
from callbacks.regenerate import RegenerateData
from callbacks.report import RoundReport

__all__ = ["EvaluatePassAtK", "RefitProbe", "RegenerateData", "RoundListener", "RoundReport"]
