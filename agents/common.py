"""Shared ``model.learn()`` recipe of ``agents/``: the library's recipe loop, with the shipped agents' folder.

The loop (train, keep the best evaluated model, fine-tune it for the chip, evaluate) is
:mod:`spiking_dqn.cli.recipe`, the model card :mod:`spiking_dqn.cli.card`, and the
hyperparameters are the entries of ``zoo_configs/dqn.yml``
(:func:`spiking_dqn.cli.hyperparams.load_hyperparams`), the same that ``spiking-dqn train``
uses. What is recipe-specific here: the default output folder (the shipped agent's) and
the command recorded in the model card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spiking_dqn.cli.card import replace_card_section, write_training_card
from spiking_dqn.cli.recipe import (
    EVAL_SEED,
    QAT_CHECK_EPISODES,
    QAT_CHECK_FREQ,
    QAT_CHECK_SEED,
    TRAINED_NAME,
    TRAINING_KEYS,
    add_training_arguments,
    train_and_evaluate,
    training_options,
    with_overrides,
)

__all__ = [
    "EVAL_SEED",
    "QAT_CHECK_EPISODES",
    "QAT_CHECK_FREQ",
    "QAT_CHECK_SEED",
    "TRAINED_DIR",
    "TRAINED_NAME",
    "TRAINING_KEYS",
    "command_line",
    "parse_args",
    "replace_card_section",
    "train_and_card",
    "trained_model_path",
]

TRAINED_DIR = Path(__file__).resolve().parent / "trained"


def trained_model_path(env_id: str) -> Path:
    """Where the shipped trained agent of ``env_id`` lives."""
    return TRAINED_DIR / env_id / "model.zip"


def parse_args(env_id: str, default_timesteps: int, argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options shared by the recipes (those of ``spiking-dqn train``).

    :param env_id: Gymnasium id
    :param default_timesteps: default of ``--timesteps``
    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(description=f"Train a spiking DQN on {env_id} with model.learn().",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_training_arguments(parser, default_out=TRAINED_DIR / env_id, default_timesteps=default_timesteps)
    args = parser.parse_args(argv)
    try:
        training_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def train_and_card(env_id: str, hyperparams: dict[str, Any], args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Train, fine-tune for the chip and evaluate (:func:`spiking_dqn.cli.recipe.train_and_evaluate`), write a card.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included
    :param args: the parsed recipe options (:func:`parse_args`)
    :param command: the command line to print in the model card
    :return: the evaluation summary written to ``eval.json``
    """
    options = training_options(args)
    hyperparams = with_overrides(hyperparams, options)
    summary = train_and_evaluate(env_id, hyperparams, options, command)
    write_training_card(options.out, env_id, hyperparams, summary)
    return summary


def command_line(module: str) -> str:
    """The command that reproduces this run, for the model card."""
    return " ".join(["python -m", module, *sys.argv[1:]])
