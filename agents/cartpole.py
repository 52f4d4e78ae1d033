"""``model.learn()`` recipe for CartPole-v0 (10 ticks, as in the reference work).

The hyperparameters are the ``CartPole-v0`` entry of ``zoo_configs/dqn.yml`` (where their
choice is explained), read with :func:`spiking_dqn.cli.hyperparams.load_hyperparams`.

    python -m agents.cartpole --timesteps 60000 --seed 5 --out agents/trained/CartPole-v0   # the shipped agent
"""

from __future__ import annotations

from agents.common import command_line, parse_args, train_and_card
from spiking_dqn.cli.hyperparams import load_hyperparams, load_timesteps

ENV_ID = "CartPole-v0"
HYPERPARAMS = load_hyperparams(ENV_ID)
TIMESTEPS = load_timesteps(ENV_ID)


def main(argv: list[str] | None = None) -> None:
    """Train the recipe (options: ``python -m agents.cartpole --help``)."""
    args = parse_args(ENV_ID, TIMESTEPS, argv)
    train_and_card(ENV_ID, HYPERPARAMS, args, command_line("agents.cartpole"))


if __name__ == "__main__":
    main()
