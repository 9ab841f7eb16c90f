"""The self-training loop as one Lightning callback, made of small parts passed in.

    trainer:
      reload_dataloaders_every_n_epochs: 1
      callbacks:
        - class_path: ucoder.callbacks.SelfTraining
          init_args:
            round_step:   {class_path: ucoder.callbacks.RoundStep, init_args: {...}}
            evaluate:     {class_path: ucoder.callbacks.PassAtKEvaluator, init_args: {...}}
            probe:        {class_path: ucoder.callbacks.ProbeRefitter, init_args: {...}}
            report:       {class_path: ucoder.callbacks.ReportWriter}

:class:`SelfTraining` runs the steps in a fixed order (see :mod:`ucoder.callbacks.loop`)
and keeps the whole loop's state in ``state_dict()``, so a resumed fit continues where it
stopped. Each part does one job and works without a Trainer.
"""

from ucoder.callbacks.evaluate import PassAtKEvaluator
from ucoder.callbacks.loop import SelfTraining
from ucoder.callbacks.probe import ProbeRefitter
from ucoder.callbacks.report import ReportWriter
from ucoder.callbacks.rounds import RoundStep

__all__ = ["PassAtKEvaluator", "ProbeRefitter", "ReportWriter", "RoundStep", "SelfTraining"]
