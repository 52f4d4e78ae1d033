"""``model.learn()`` recipe for CartPole-v0 (10 ticks, as in the reference work).

The hyperparameters are rl-zoo's CartPole DQN ones with a lower learning rate and a
slower target update (the spiking network's Q-values oscillated with lr 2.3e-3 and a
target update every 10 steps), and a 64-64 network.

    python -m agents.cartpole --timesteps 60000 --seed 5 --out agents/trained/CartPole-v0   # the shipped agent
"""

from __future__ import annotations

from agents.common import command_line, parse_args, train_and_card

ENV_ID = "CartPole-v0"
HYPERPARAMS = dict(
    learning_rate=5e-4,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=100,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[64, 64], ticks=16, beta=0.9, threshold=1.0),
)
TIMESTEPS = 60_000


def main(argv: list[str] | None = None) -> None:
    args = parse_args(ENV_ID, TIMESTEPS, argv)
    train_and_card(ENV_ID, HYPERPARAMS, args, command_line("agents.cartpole"))


if __name__ == "__main__":
    main()
