"""Does the loop make the model better? One command measures it: `ucoder study`.

:class:`Study` runs the main arm (the loop for R on-policy rounds), the paper's one-round
selection ablation from round 0's candidate pool, and greedy pass@1 on the whole
benchmark before training and after every fit, with the statistics fixed in advance
(:mod:`ucoder.study.report`). Every step is a file, so a killed study resumes.
"""

from ucoder.study.config import StudyConfig
from ucoder.study.driver import Study, reselect_round

__all__ = ["Study", "StudyConfig", "reselect_round"]
