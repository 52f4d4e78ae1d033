"""``spiking-dqn train ENV``: train a spiking DQN on any Gymnasium environment with a discrete action space.

The hyperparameters are the environment's entry of ``zoo_configs/dqn.yml`` when it has one,
else :data:`~spiking_dqn.recipes.hyperparams.DEFAULT_HYPERPARAMS`; the command says which.
The options are the fields of :class:`~spiking_dqn.recipes.recipe.TrainOptions`, which the
recipes of ``agents/`` parse too (:func:`add_training_arguments`, :func:`training_options`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spiking_dqn.cli.arguments import CTRL_C_ERRORS, CLIError, HelpFormatter, add_options, interrupted, is_ctrl_c, read_options
from spiking_dqn.cli.loading import check_env
from spiking_dqn.recipes.card import write_training_card
from spiking_dqn.recipes.hyperparams import (
    DEFAULT_HYPERPARAMS, DEFAULT_TIMESTEPS, ZOO_FILE, HyperparamsFileError, hyperparams_for,
)
from spiking_dqn.recipes.recipe import TrainOptions, train_and_evaluate, with_overrides
from spiking_dqn.recipes.run_folder import resume_hint
from spiking_dqn.recipes.run_folder import CheckpointError
from spiking_dqn.threads import choose_torch_threads

#: Where ``spiking-dqn train ENV`` writes without ``--out`` (``runs/`` is ignored by git).
RUNS = Path("runs")


def add_training_arguments(
    parser: argparse.ArgumentParser, default_out: Path | None, default_timesteps: int | None, **helps: str
) -> None:
    """Add the fields of :class:`~spiking_dqn.recipes.recipe.TrainOptions` to ``parser`` as options.

    :param parser: the parser
    :param default_out: default of ``--out`` (None: decided by the command)
    :param default_timesteps: default of ``--timesteps`` (None: decided by the command)
    :param helps: help texts of this command that differ from the fields' (e.g. ``out=``)
    """
    add_options(parser, TrainOptions, defaults={"out": default_out, "timesteps": default_timesteps}, helps=helps)


def training_options(args: argparse.Namespace) -> TrainOptions:
    """The checked :class:`~spiking_dqn.recipes.recipe.TrainOptions` of parsed training options.

    :param args: options added by :func:`add_training_arguments`, ``out`` and ``timesteps`` set
    :raises ValueError: what :meth:`~spiking_dqn.recipes.recipe.TrainOptions.check` refuses
    """
    options = read_options(args, TrainOptions, out=Path(args.out))
    options.check()
    return options


def train_env(
    env_id: str, options: TrainOptions, command: str, resolved: tuple[dict[str, Any], int, str] | None = None
) -> dict[str, Any]:
    """Check the env, train, fine-tune, evaluate and write the model card, with the file's or default hyperparameters.

    :param env_id: Gymnasium id (discrete action space)
    :param options: the training options (``options.timesteps`` already resolved)
    :param command: the command line recorded in the card
    :param resolved: the hyperparameters, as :func:`~spiking_dqn.recipes.hyperparams.hyperparams_for` returned them
        for ``env_id`` (None: ``zoo_configs/dqn.yml``'s entry, else the defaults)
    :return: the summary of ``eval.json``
    :raises CLIError: an env the spiking DQN cannot train on, or a ``resume`` of a checkpoint with other settings
    """
    check_env(env_id, options.obs_bound)
    hyperparams, _, source = resolved if resolved is not None else _hyperparams(env_id, None)
    print(f"{env_id}: hyperparameters from {source}", flush=True)
    hyperparams = with_overrides(hyperparams, options)
    try:
        summary = train_and_evaluate(env_id, hyperparams, options, command)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    write_training_card(options.out, env_id, hyperparams, summary)
    return summary


def _hyperparams(env_id: str, path: Path | None) -> tuple[dict[str, Any], int, str]:
    try:
        return hyperparams_for(env_id, path)
    except HyperparamsFileError as exc:
        raise CLIError(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> int:
    """``spiking-dqn train`` (Ctrl-C: one line saying how to resume, exit 130)."""
    resolved = _hyperparams(args.env, args.hyperparams)  # read once: the steps and what trains come from one read
    if args.timesteps is None:
        args.timesteps = resolved[1]
    if args.out is None:
        args.out = RUNS / args.env
    try:
        options = training_options(args)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    print(choose_torch_threads(), flush=True)
    try:
        train_env(args.env, options, args.command_line, resolved)
    except CTRL_C_ERRORS as exc:
        if not is_ctrl_c(exc):
            raise
        return interrupted(resume_hint(options, args.command_line))
    model = options.out / "model.zip"
    print(f"next: spiking-dqn deploy {model} --out {options.out / 'chip_program.npz'}\n"
          f"      spiking-dqn compare {model} --episodes 20 --out {options.out / 'compare'}")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``train`` subcommand to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    defaults = "\n".join(f"  {key}={value!r}" for key, value in DEFAULT_HYPERPARAMS.items())
    train = sub.add_parser(
        "train",
        help="train a spiking DQN on a Gymnasium environment with a discrete action space",
        description="Train a spiking DQN with model.learn() (SB3 DQN, SpikingDQNPolicy), keep the best periodic\n"
        "evaluation, fine-tune it for the int8 chip (QAT), evaluate it and write a model card.\n"
        f"Hyperparameters: the env's entry of zoo_configs/{ZOO_FILE}, else the defaults below (printed at the start).",
        epilog=(
            f"defaults without an entry in zoo_configs/{ZOO_FILE}: {DEFAULT_TIMESTEPS} timesteps and the DQN keyword "
            f"arguments\n{defaults}\n\nexamples:\n"
            "  spiking-dqn train CartPole-v0 --out runs/CartPole-v0\n"
            "  spiking-dqn train CartPole-v0 --out runs/CartPole-v0 --resume   # after Ctrl-C\n"
            "  spiking-dqn train MountainCar-v0 --timesteps 2000 --qat-steps 0 --out runs/mc\n"
            "  spiking-dqn train CartPole-v0 --hyperparams runs/tune/tuned.yml   # an entry of spiking-dqn tune --export"
        ),
        formatter_class=HelpFormatter,
    )
    train.add_argument("env", help=f"Gymnasium environment id with a discrete action space (entries of {ZOO_FILE}: "
                                   "CartPole-v0, CartPole-v1, Acrobot-v1, LunarLander-v3, MountainCar-v0; "
                                   "any other gets the defaults below)")
    train.add_argument(
        "--hyperparams", type=Path, default=None, metavar="FILE",
        help=f"an rl-zoo style file (e.g. written by spiking-dqn tune --export) whose entry for ENV to train instead of "
             f"zoo_configs/{ZOO_FILE}'s")
    add_training_arguments(
        train, default_out=None, default_timesteps=None, out="output folder (default runs/<env>)",
        timesteps=f"environment steps (default: the n_timesteps of the {ZOO_FILE} entry, else {DEFAULT_TIMESTEPS})",
    )
    train.set_defaults(func=cmd_train)
