"""The study driver: the fits and evaluations a study needs, each one file, resumable.

Steps, in order (a step whose file exists is skipped, so a killed study resumes):

1. ``estimate.json`` — a short calibration run, and the expected time of the whole study;
2. ``evals/base.json`` — greedy pass@1 of the base on the whole benchmark;
3. ``main/`` — one fit with the loop (``rounds`` on-policy rounds of the ``ucoder`` policy);
4. ``evals/main_round_<k>.json`` — the adapter after each round;
5. per ablation arm: ``arms/<arm>/round_0/`` (the arm's own pick from round 0's
   candidates), ``arms/<arm>/fit.json`` (one round from the base), ``evals/arm_<arm>.json``;
6. ``study.json``, ``study.png`` and the printed table (rebuilt from the files every time).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from ucoder.jsonl import read_json, read_jsonl, write_json
from ucoder.study import evals, fits, report
from ucoder.study.config import StudyConfig

log = logging.getLogger("ucoder.study")


class Study:
    """Run (or resume) a study.

    Args:
        study: what to measure (:class:`StudyConfig`).
        fit: a `ucoder fit` config mapping (trainer, model, data and the loop's callbacks);
            every fit of the study is made from it.
    """

    def __init__(self, study: StudyConfig, fit: dict):
        self.study = study
        self.fit = fit
        self.out = Path(study.out_dir)
        self.options = evals.model_options(fit)
        self.done: list[str] = []  # the steps this call ran (the others were read back)
        self._problems = None  # loaded on first use

    def steps(self) -> list[tuple[str, callable]]:
        """``(name, run)`` for every step of the study, in order."""
        steps = [("calibrate", self.estimate), ("evaluate base", self._eval_base),
                 ("main arm: fit", self._fit_main)]
        steps += [(f"main arm: evaluate round {k}", lambda k=k: self._eval_main(k))
                  for k in range(self.study.rounds)]
        for arm in self.study.ablation:
            steps += [(f"{arm}: select", lambda a=arm: self._select_arm(a)),
                      (f"{arm}: fit", lambda a=arm: self._fit_arm(a)),
                      (f"{arm}: evaluate", lambda a=arm: self._eval_arm(a))]
        return steps

    def run(self) -> dict:
        """Run the missing steps; write and return ``study.json``'s content."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.study.threads:
            import torch

            torch.set_num_threads(self.study.threads)
        start = time.perf_counter()
        steps = self.steps()
        with tqdm(total=len(steps), desc="study", unit="step") as bar:
            for name, step in steps:
                bar.set_postfix_str(name)
                if step():
                    self.done.append(name)
                bar.update(1)
        return self.write_report(time.perf_counter() - start)

    # -- steps: each returns True when it did work, False when it read a finished file ----
    def estimate(self) -> bool:
        """Write ``estimate.json`` (the expected time) unless it exists; True if it ran."""
        path = self.out / "estimate.json"
        if path.exists():
            return False
        from ucoder.study.calibrate import calibrate

        estimate = calibrate(self.study, self.fit, self.options, self.problems())
        write_json(path, estimate)
        log.info("expected time of the whole study: %.0f min (%s)",
                 estimate["total_s"] / 60, estimate["basis"])
        return True

    def _eval_base(self) -> bool:
        return self._evaluate("base", None)

    def _fit_main(self) -> bool:
        root = self.out / "main"
        if (root / "fit.json").exists():
            return False
        config = fits.fit_config(self.fit, root, seed=self.study.seed,
                                 max_epochs=self.study.rounds * self.study.epochs_per_round)
        _set_every_n_epochs(config, self.study.epochs_per_round)
        fits.run_fit(config, root)
        return True

    def _eval_main(self, k: int) -> bool:
        adapter = fits.adapter_after_round(self.out / "main", k, self.study.epochs_per_round)
        if not adapter.exists():  # the loop stopped early (a round selected nothing new)
            log.warning("main arm: no adapter after round %d (%s): not evaluated", k, adapter)
            return False
        return self._evaluate(f"main_round_{k}", str(adapter))

    def _select_arm(self, arm: str) -> bool:
        dst = self.out / "arms" / arm / "round_0"
        if (dst / "selected.jsonl").exists():
            return False
        reselect_round(self.out / "main" / "round_0", dst, arm)
        return True

    def _fit_arm(self, arm: str) -> bool:
        root = self.out / "arms" / arm
        if (root / "fit.json").exists():
            return False
        selected = root / "round_0" / "selected.jsonl"
        if not read_jsonl(selected):
            write_json(root / "fit.json", {"skipped": "the policy selected no pair"})
            return True
        config = fits.fit_config(self.fit, root, seed=self.study.seed,
                                 max_epochs=self.study.epochs_per_round,
                                 train_file=str(selected), keep_callbacks=False)
        fits.run_fit(config, root)
        return True

    def _eval_arm(self, arm: str) -> bool:
        adapter = fits.adapter_after_round(self.out / "arms" / arm, 0,
                                           self.study.epochs_per_round)
        if not adapter.exists():
            return False
        return self._evaluate(f"arm_{arm}", str(adapter))

    def _evaluate(self, name: str, adapter: str | None) -> bool:
        path = self.out / "evals" / f"{name}.json"
        if path.exists():
            return False
        evals.evaluate_greedy(path, self.options, self.problems(), adapter=adapter,
                              study=self.study)
        return True

    # -- helpers -------------------------------------------------------------------------
    def problems(self):
        """The benchmark problems every evaluation uses."""
        if self._problems is None:
            from ucoder.evaluation import load_benchmark

            self._problems = load_benchmark(self.study.benchmark, limit=self.study.limit)
        return self._problems

    def write_report(self, seconds: float) -> dict:
        """Rebuild ``study.json`` and ``study.png`` from the files and print the table."""
        records = {p.stem: read_json(p) for p in sorted((self.out / "evals").glob("*.json"))}
        fit_records = {p.parent.name: read_json(p) for p in self.out.glob("**/fit.json")}
        result = report.build(self.study, records, fit_records, self.pair_counts(),
                              read_json(self.out / "estimate.json"), seconds)
        write_json(self.out / "study.json", result)
        if result["base"]:
            report.plot(result, self.out / "study.png")
        print(report.table(result))
        return result

    def pair_counts(self) -> dict:
        """Training pairs behind each evaluation (the main arm's are cumulative)."""
        counts = {}
        for k in range(self.study.rounds):
            path = self.out / "main" / f"train_round_{k}.jsonl"
            if path.exists():
                counts[f"main_round_{k}"] = len(read_jsonl(path))
        for arm in self.study.ablation:
            path = self.out / "arms" / arm / "round_0" / "selected.jsonl"
            if path.exists():
                counts[f"arm_{arm}"] = len(read_jsonl(path))
        return counts


def _set_every_n_epochs(config: dict, epochs: int) -> None:
    """The loop regenerates after every round's epochs: set its ``every_n_epochs``."""
    loops = [cb for cb in config["trainer"]["callbacks"] if isinstance(cb, dict)
             and str(cb.get("class_path", "")).endswith("SelfTraining")]
    if not loops:
        raise ValueError("fit.trainer.callbacks has no SelfTraining callback: the main arm "
                         "of a study is the loop (see configs/study.yaml)")
    for loop in loops:
        loop.setdefault("init_args", {})["every_n_epochs"] = epochs


def reselect_round(src: Path, dst: Path, policy: str) -> Path:
    """Select from ``src``'s executed candidates with ``policy`` into ``dst``.

    The stage files up to the executions are copied, so the arm selects from the very
    pool the main arm's round 0 drew (no sampling); only the selection runs again.
    """
    from ucoder.ipc.config import round_config_from_dict
    from ucoder.ipc.round import STAGES, RoundRunner

    saved = read_json(src / "round.json")
    if saved is None:
        raise FileNotFoundError(f"{src / 'round.json'} is missing: the main arm's round 0 "
                                "has not run")
    config = round_config_from_dict(saved["config"])
    config = replace(config, selection=replace(config.selection, policy=policy))
    dst.mkdir(parents=True, exist_ok=True)
    for stage in STAGES[:STAGES.index("selected")]:
        for name in (f"{stage}.jsonl", f"{stage}.dropped.jsonl"):
            if (src / name).exists():
                shutil.copyfile(src / name, dst / name)
    write_json(dst / "round.json", {"config": config.to_dict(), "seed": saved["seed"]})
    RoundRunner(None, dst, config, seed=saved["seed"]).run()
    return dst / "selected.jsonl"
