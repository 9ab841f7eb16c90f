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
    "study": "ucoder.commands.study",
}

# Subcommands whose argument parsing is owned by the module itself (LightningCLI).
PASSTHROUGH = {"fit", "study"}


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as err:
        if err.name == COMMANDS[name]:
            raise SystemExit(f"ucoder: the '{name}' command is not available in this build")
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser: every command listed with its one-line ``HELP``; only the command
    that runs adds its options (their imports can be heavy)."""
    parser = argparse.ArgumentParser(
        prog="ucoder",
        description="Self-improving code LLMs with no external data (UCoder / IPC).",
        epilog="Commands that load a model share --model, --adapter, --backend, --device, "
               "--dtype, --load-in-4bit and --threads. 'ucoder COMMAND --help' for more.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if name in PASSTHROUGH or (argv and argv[0] != name):
            sub.add_parser(name, help=_help(name), add_help=name not in PASSTHROUGH)
            continue
        module = _load(name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
    return parser


def _help(name: str) -> str:
    """A command's one-line ``HELP`` (command modules import nothing heavy at the top)."""
    try:
        return _load(name).HELP
    except SystemExit:
        return "(not available in this build)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ucoder`` console script.

    A bad option or input (a ``ValueError`` naming it, or an ``OSError`` such as a
    missing file) ends the command with one line on stderr and exit status 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return int(_load(argv[0]).main(argv[1:]) or 0)
    args = build_parser(argv).parse_args(argv)
    if args.command is None:
        build_parser(argv).print_help()
        return 2
    try:
        return int(_load(args.command).run(args) or 0)
    except (ValueError, OSError) as err:
        action = getattr(args, "probe_command", None) or getattr(args, "action", None)
        where = " ".join(x for x in ("ucoder", args.command, action) if x)
        print(f"{where}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
