"""Every recipe of zoo_configs/dqn.yml builds its spiking DQN on its env, with the encoder bounds the file states."""

import warnings

import numpy as np
import pytest

from spiking_dqn import SpikingDQN, SpikingDQNPolicy
from spiking_dqn.recipes.hyperparams import load_hyperparams, load_timesteps, zoo_entries

#: The classic-control table of issue 26 (rl-zoo's DQN benchmark): each has a recipe, within the table's steps.
TABLE_STEPS = {"CartPole-v1": 100_000, "Acrobot-v1": 150_000, "LunarLander-v3": 300_000, "MountainCar-v0": 200_000}


def test_the_classic_control_table_has_recipes_within_its_steps():
    assert set(TABLE_STEPS) <= set(zoo_entries())
    for env_id, steps in TABLE_STEPS.items():
        assert load_timesteps(env_id) <= steps


@pytest.mark.parametrize("env_id", sorted(zoo_entries()))
def test_each_recipe_builds_and_learns_on_its_env(env_id):
    params = load_hyperparams(env_id)
    policy_kwargs = params.pop("policy_kwargs")
    params.update(learning_starts=0, buffer_size=1_000)  # a few gradient steps, a small buffer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CartPole-v0's deprecation notice
        model = SpikingDQN(SpikingDQNPolicy, env_id, policy_kwargs=policy_kwargs, seed=0,
                           device="cpu", **params)
        model.learn(32)
    net = model.policy.q_net.q_net
    assert list(net.net_arch) == policy_kwargs["net_arch"] and net.ticks == policy_kwargs["ticks"]
    space = model.observation_space
    expected = policy_kwargs.get("obs_bound")
    if expected is None and np.all(np.isfinite(space.high)):
        expected = np.maximum(np.abs(space.low), np.abs(space.high))  # a bounded space: its own bounds
    if expected is not None:
        assert model.policy.q_net.bound_choice.bound == pytest.approx(np.asarray(expected, dtype=np.float32))
