"""``ucoder fit``: QLoRA SFT through a LightningCLI over UCoderModule + SFTDataModule.

Every ``__init__`` argument of the two classes and of ``Trainer`` is a config key:
``ucoder fit --config configs/demo.yaml --model.lr 1e-4 --trainer.max_steps 20``.
The same entry point runs under ``python -m ucoder fit``, ``torchrun --nproc_per_node N
-m ucoder fit`` and ``fabric run``; Lightning detects the launcher's environment.
"""

from __future__ import annotations

from ucoder.commands import show_info_logs

HELP = "fine-tune with QLoRA on selected pairs (a LightningCLI; ucoder fit --help)"


def build_cli(argv: list[str] | None, run: bool = True):
    """Build (and with ``run`` execute) the LightningCLI for ``fit``."""
    from lightning.pytorch.cli import LightningCLI

    from ucoder.data import SFTDataModule
    from ucoder.sft import UCoderModule

    args = ["fit", *argv] if run else list(argv or [])
    return LightningCLI(
        UCoderModule,
        SFTDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"fit": {"default_env": False}} if run else {"default_env": False},
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``ucoder fit`` with ``argv`` (the arguments after ``fit``)."""
    show_info_logs()  # Lightning logs on its own
    build_cli(list(argv or []))
    return 0


def add_arguments(parser) -> None:  # the dispatcher hands ``fit`` to main() instead
    """Unused: ``fit`` parses its own arguments (see :func:`main`)."""


def run(args) -> int:
    """Unused: see :func:`main`."""
    return main([])
