"""The ``ucoder`` console script.

Each subcommand lives in its own module under :mod:`ucoder.commands` and is imported
only when it runs, so ``ucoder sandbox run`` does not pay for importing torch.
A command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. ``ucoder fit`` hands its arguments to a LightningCLI unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; the order is the order of `ucoder --help`.
COMMANDS: dict[str, str] = {
    "fit": "ucoder.commands.fit",
    "generate": "ucoder.commands.generate",
    "round": "ucoder.commands.round",
    "eval": "ucoder.commands.eval",
    "sandbox": "ucoder.commands.sandbox",
    "probe": "ucoder.commands.probe",
    "export": "ucoder.commands.export",
}

# Subcommands whose argument parsing is owned by the module itself (LightningCLI).
PASSTHROUGH = {"fit"}


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as err:
        if err.name == COMMANDS[name]:
            raise SystemExit(f"ucoder: the '{name}' command is not available in this build")
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ucoder`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return int(_load(argv[0]).main(argv[1:]) or 0)

    parser = argparse.ArgumentParser(
        prog="ucoder",
        description="Self-improving code LLMs with no external data (UCoder / IPC).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if name in PASSTHROUGH:
            sub.add_parser(name, help="train with Lightning (ucoder fit --help)", add_help=False)
            continue
        if argv and argv[0] != name:
            # Only import the module that runs; list the rest by name.
            sub.add_parser(name)
            continue
        module = _load(name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(_load(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
