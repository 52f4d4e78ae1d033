"""The ``spiking-dqn`` command line: one module per command group, no import of ``agents``.

The commands parse and print; the work is the library's (the recipes of
:mod:`spiking_dqn.recipes`, :func:`spiking_dqn.pipeline.fit_to_chip`, :func:`spiking_dqn.compare.compare`).

* :mod:`~spiking_dqn.cli.train`: ``train`` (any discrete-action Gymnasium env), the loop of
  :mod:`~spiking_dqn.recipes.recipe`;
* :mod:`~spiking_dqn.cli.demo`: ``demo`` (train, deploy, compare);
* :mod:`~spiking_dqn.cli.compare`: ``compare``;
* :mod:`~spiking_dqn.cli.fit`: ``deploy``, ``search``, ``calibrate`` (fitting a model to the chip);
* :mod:`~spiking_dqn.cli.export`: ``export`` (a model or chip program as a NIR graph).
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from spiking_dqn import __version__
from spiking_dqn.cli import compare, demo, export, fit, train, tune
from spiking_dqn.cli.arguments import CLIError, HelpFormatter, SubcommandParser, join_negative_lists, parse_lambda
from spiking_dqn.cli.checks import check_arguments
from spiking_dqn.cli.loading import infer_env_id, load_spiking_model

__all__ = [
    "CLIError", "build_parser", "infer_env_id", "load_spiking_model", "main", "parse_lambda", "show_each_warning_once",
]

DESCRIPTION = """\
Train spiking DQN agents (Stable-Baselines3), deploy them as int8 chip programs to
SpiNNaker2 or its embedded emulator, and compare the chip with the float agent.

Run `spiking-dqn COMMAND --help` for the options of a command. Outputs go under runs/
(ignored by git) unless --out says otherwise."""
EXAMPLES = """examples:
  spiking-dqn demo --timesteps 5000 --qat-steps 1000 --out runs/demo
  spiking-dqn train MountainCar-v0 --timesteps 2000 --qat-steps 0 --out runs/mc
  spiking-dqn deploy runs/mc/model.zip --out runs/mc/chip_program.npz
  spiking-dqn compare runs/mc/model.zip --program runs/mc/chip_program.npz --episodes 20
  spiking-dqn calibrate agents/trained/CartPole-v0/model.zip
  spiking-dqn search agents/trained/CartPole-v0/model.zip --storage sqlite:///runs/search.db
  spiking-dqn export agents/trained/CartPole-v0/chip_program.npz --nir runs/cartpole.nir

errors: bad input ends in a one-line "error: ..." and exit status 2; a file that cannot be
written (full disk, no permission) or memory running out in a one-line error and exit status 1.
For a bug report, show the traceback: spiking-dqn --debug COMMAND ... (or SPIKING_DQN_DEBUG=1).
"""
#: Environment variable that shows the traceback of an error, as ``--debug`` does.
DEBUG_VARIABLE = "SPIKING_DQN_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spiking-dqn``."""
    parser = argparse.ArgumentParser(prog="spiking-dqn", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (for bug reports; or {DEBUG_VARIABLE}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=SubcommandParser)
    train.add_parser(sub)
    demo.add_parser(sub)
    compare.add_parser(sub)
    fit.add_parsers(sub)  # `deploy`, `search`, `calibrate`
    export.add_parser(sub)
    tune.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spiking-dqn`` console script.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status (2 for a user error, 1 for a file that cannot be written or memory running out)
    """
    argv = join_negative_lists(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    if not argv:  # like git: the usage and the commands; argparse's status for a missing argument
        print(commands_overview(parser), file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["spiking-dqn", *argv])
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    with warnings.catch_warnings():
        show_each_warning_once()
        try:
            check_arguments(args)
            return int(args.func(args))
        except CLIError as exc:
            if debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (OSError, MemoryError) as exc:
            if debug:
                raise
            print(f"error: {error_line(exc)} (run with --debug or {DEBUG_VARIABLE}=1 for the traceback)",
                  file=sys.stderr)
            return 1


def error_line(exc: OSError | MemoryError) -> str:
    """One line saying what failed: a file that could not be written or read, or memory that ran out.

    :param exc: the error
    """
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + str(exc) if str(exc) else ''} (a smaller network, fewer ticks or a smaller batch)"
    what = {errno.ENOSPC: "no space left on the device", errno.EACCES: "permission denied",
            errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded"}.get(exc.errno or 0)
    where = exc.filename if exc.filename is not None else ""
    text = what or exc.strerror or str(exc) or type(exc).__name__
    return " ".join(f"{text}{': ' + str(where) if where else ''}".split())


def commands_overview(parser: argparse.ArgumentParser) -> str:
    """The usage, then each command with its one-line description, then where the options are described.

    :param parser: the ``spiking-dqn`` parser of :func:`build_parser`
    """
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    commands = [(choice.dest, choice.help or "") for choice in sub._choices_actions]
    width = max(len(name) for name, _ in commands)
    lines = [parser.format_usage().rstrip(), "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in commands]
    lines += ["", "Run `spiking-dqn COMMAND --help` for the options of a command, `spiking-dqn --help` for examples."]
    return "\n".join(lines)


def show_each_warning_once() -> None:
    """Show a warning whose text was shown already no more (for the rest of the process, or of the enclosing
    ``warnings.catch_warnings`` block, which restores the previous ``warnings.showwarning``).

    Gymnasium warns on every ``make`` of an outdated env (CartPole-v0), and its ``"once"``
    filter is reset by each ``catch_warnings`` block, so a run would repeat it many times.
    Every ``spiking-dqn`` command and every recipe of ``agents/`` (``agents.common.parse_args``)
    runs with it.
    """
    shown: set[tuple[str, type[Warning]]] = set()
    show = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        key = (str(message), category)
        if key not in shown:
            shown.add(key)
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
