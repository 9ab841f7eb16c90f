"""``ucoder study --config configs/study.yaml``: base vs loop vs selection ablation.

The YAML has two sections: ``study:`` (:class:`ucoder.study.StudyConfig`) and ``fit:``,
a `ucoder fit` config (trainer, model, data, the loop's callback) that every fit of the
study is made from. Any key can be overridden: ``--study.rounds 2``.
"""

from __future__ import annotations

from ucoder.commands import show_info_logs

HELP = "measure the loop: HumanEval before/after each round and the selection ablation"


def build_parser():
    """The jsonargparse parser of ``ucoder study``."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    from ucoder.study import StudyConfig

    parser = ArgumentParser(prog="ucoder study", description=HELP, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a study YAML")
    parser.add_class_arguments(StudyConfig, "study")
    parser.add_argument("--fit", type=dict, default={},
                        help="a `ucoder fit` config mapping (trainer, model, data)")
    parser.add_argument("--estimate_only", action=ActionYesNo, default=False,
                        help="run the calibration, print the expected time, stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ucoder study`` with ``argv`` (the arguments after ``study``)."""
    from ucoder.study import Study

    show_info_logs()  # Lightning logs on its own
    parser = build_parser()
    config = parser.instantiate_classes(parser.parse_args(list(argv or [])))
    if not config.fit:
        parser.error("fit: a `ucoder fit` config mapping is required (see configs/study.yaml)")
    study = Study(config.study, dict(config.fit))
    if config.estimate_only:
        study.out.mkdir(parents=True, exist_ok=True)
        study.estimate()
        return 0
    study.run()
    return 0


def add_arguments(parser) -> None:  # the dispatcher hands ``study`` to main() instead
    """Unused: ``study`` parses its own arguments (see :func:`main`)."""


def run(args) -> int:
    """Unused: see :func:`main`."""
    return main([])
