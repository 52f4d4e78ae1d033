"""What the recipes of ``agents/`` share beyond the library: the shipped agents' folder and the command line.

The loop (learn, fit to the chip, evaluate) is :mod:`spiking_dqn.recipes.recipe`, the model
card :mod:`spiking_dqn.recipes.card`, and the hyperparameters are the entries of
``zoo_configs/dqn.yml`` (:func:`spiking_dqn.recipes.hyperparams.load_hyperparams`), the same
that ``spiking-dqn train`` uses. What is recipe-specific here: the default output folder (the
shipped agent's) and the command recorded in the model card.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spiking_dqn.cli import show_each_warning_once
from spiking_dqn.cli.arguments import CTRL_C_ERRORS, interrupted, is_ctrl_c
from spiking_dqn.cli.train import add_training_arguments, training_options
from spiking_dqn.recipes.recipe import TrainOptions
from spiking_dqn.recipes.run_folder import resume_hint

__all__ = ["TRAINED_DIR", "command_line", "exit_on_ctrl_c", "parse_args", "trained_model_path"]

TRAINED_DIR = Path(__file__).resolve().parent / "trained"


def trained_model_path(env_id: str) -> Path:
    """Where the shipped trained agent of ``env_id`` lives."""
    return TRAINED_DIR / env_id / "model.zip"


def parse_args(env_id: str, default_timesteps: int, argv: list[str] | None = None) -> TrainOptions:
    """The checked options of a recipe (those of ``spiking-dqn train``; ``--help`` lists them).

    :param env_id: Gymnasium id
    :param default_timesteps: default of ``--timesteps``
    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(description=f"Train a spiking DQN on {env_id} with model.learn().",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser, default_out=TRAINED_DIR / env_id, default_timesteps=default_timesteps)
    args = parser.parse_args(argv)
    show_each_warning_once()  # one deprecation notice of an outdated env per run, as in `spiking-dqn train`
    try:
        return training_options(args)
    except ValueError as exc:
        parser.error(str(exc))


def command_line(module: str) -> str:
    """The command that reproduces this run, for the model card."""
    return " ".join(["python -m", module, *sys.argv[1:]])


@contextmanager
def exit_on_ctrl_c(options: TrainOptions, command: str) -> Iterator[None]:
    """Ctrl-C in the block ends the recipe as ``spiking-dqn train`` ends: one line naming the command that resumes,
    exit 130 (:func:`~spiking_dqn.cli.arguments.interrupted`).

    :param options: the recipe's options
    :param command: its command line (:func:`command_line`)
    """
    try:
        yield
    except CTRL_C_ERRORS as exc:
        if not is_ctrl_c(exc):
            raise
        raise SystemExit(interrupted(resume_hint(options, command))) from None
