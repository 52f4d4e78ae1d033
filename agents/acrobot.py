"""``model.learn()`` recipe for Acrobot-v1 (20 ticks, as in the reference work).

    python -m agents.acrobot --timesteps 100000 --seed 0 --out agents/trained/Acrobot-v1

The hyperparameters are the ``Acrobot-v1`` entry of ``zoo_configs/dqn.yml``: rl-zoo's
Acrobot DQN hyperparameters with a 128-128 network and encoder bounds of 6 and 12 rad/s for
the angular velocities (the file explains them), read with
:func:`spiking_dqn.cli.hyperparams.load_hyperparams`. The shipped agent's figures are in
its model card, ``agents/trained/Acrobot-v1/README.md``.
"""

from __future__ import annotations

from agents.common import command_line, parse_args, train_and_card
from spiking_dqn.cli.hyperparams import load_hyperparams, load_timesteps

ENV_ID = "Acrobot-v1"
HYPERPARAMS = load_hyperparams(ENV_ID)
TIMESTEPS = load_timesteps(ENV_ID)


def main(argv: list[str] | None = None) -> None:
    """Train the recipe (options: ``python -m agents.acrobot --help``)."""
    args = parse_args(ENV_ID, TIMESTEPS, argv)
    train_and_card(ENV_ID, HYPERPARAMS, args, command_line("agents.acrobot"))


if __name__ == "__main__":
    main()
