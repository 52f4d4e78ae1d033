"""The ``spiking-dqn`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = {
    "CartPole-v0": "agents.cartpole",
    "CartPole-v1": "agents.cartpole",
    "Acrobot-v1": "agents.acrobot",
}


def _cmd_train(args: argparse.Namespace) -> int:
    import importlib

    from agents.common import parse_args, train_and_card

    if args.env not in RECIPES:
        print(f"error: no recipe for {args.env!r}; available: {', '.join(sorted(RECIPES))}", file=sys.stderr)
        return 2
    recipe = importlib.import_module(RECIPES[args.env])
    argv = ["--seed", str(args.seed), "--out", str(args.out or Path("runs") / args.env)]
    argv += ["--timesteps", str(args.timesteps or recipe.TIMESTEPS), "--eval-episodes", str(args.eval_episodes)]
    if args.tensorboard_log:
        argv += ["--tensorboard-log", args.tensorboard_log]
    command = " ".join(["spiking-dqn", *sys.argv[1:]])
    train_and_card(args.env, recipe.HYPERPARAMS, parse_args(args.env, recipe.TIMESTEPS, argv), command)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spiking-dqn``."""
    parser = argparse.ArgumentParser(prog="spiking-dqn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a spiking DQN with the recipe of an environment")
    train.add_argument("env", help=f"environment id ({', '.join(sorted(RECIPES))})")
    train.add_argument("--timesteps", type=int, default=None, help="environment steps (default: the recipe's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output folder (default runs/<env>)")
    train.add_argument("--tensorboard-log", default=None, help="TensorBoard log folder")
    train.add_argument("--eval-episodes", type=int, default=100, help="episodes of the final evaluation")
    train.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spiking-dqn`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
