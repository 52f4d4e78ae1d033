"""``model.learn()`` recipe for CartPole-v0 (10 ticks, as in the reference work).

    python -m agents.cartpole --timesteps 60000 --seed 5 --out agents/trained/CartPole-v0   # the shipped agent

The hyperparameters are the ``CartPole-v0`` entry of ``zoo_configs/dqn.yml`` (where their
choice is explained). The steps below are those of
:func:`spiking_dqn.recipes.recipe.train_and_evaluate` (``spiking-dqn train``), in its order.
"""

from __future__ import annotations

from agents.common import command_line, exit_on_ctrl_c, parse_args
from spiking_dqn.recipes.card import write_training_card
from spiking_dqn.recipes.hyperparams import load_hyperparams, load_timesteps
from spiking_dqn.recipes.recipe import (
    fit_for_chip,
    learn,
    load_trained,
    make_model,
    record_evaluation,
    with_overrides,
)

ENV_ID = "CartPole-v0"
HYPERPARAMS = load_hyperparams(ENV_ID)
TIMESTEPS = load_timesteps(ENV_ID)


def main(argv: list[str] | None = None) -> dict:
    """Train the recipe (options: ``python -m agents.cartpole --help``); return what ``eval.json`` holds.

    Ctrl-C: one line naming the command that resumes (``--resume``), exit 130.
    """
    options = parse_args(ENV_ID, TIMESTEPS, argv)
    hyperparams = with_overrides(HYPERPARAMS, options)
    command = command_line("agents.cartpole")
    with exit_on_ctrl_c(options, command):  # one line naming the command that resumes, exit 130
        # 1. Make the env and the SpikingDQN (none with --qat-only).
        model = make_model(ENV_ID, hyperparams, options)
        # 2. Learn with SB3's EvalCallback; its best evaluation is the agent as trained (model_trained.zip).
        training = learn(model, ENV_ID, options, command, hyperparams)
        model, trained_rewards = load_trained(ENV_ID, options)
        # 3. Fit to the chip: distillation on the int8 grid, never worse than the plain post-training program (model.zip).
        qat = fit_for_chip(model, ENV_ID, options, command)
        # 4. Evaluate model.zip (eval.json) and write the model card.
        summary = record_evaluation(model, ENV_ID, options, training, trained_rewards, qat)
        write_training_card(options.out, ENV_ID, hyperparams, summary)
    return summary


if __name__ == "__main__":
    main()
