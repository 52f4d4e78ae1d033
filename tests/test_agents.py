"""The shipped trained agents reach their targets (float policy, 100 deterministic episodes)."""

import json

import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy

from agents.common import trained_model_path
from envs import make_env
from spiking_dqn import SpikingDQNPolicy

TARGETS = {"CartPole-v0": 200.0, "Acrobot-v1": -90.0}


@pytest.mark.parametrize("env_id", sorted(TARGETS))
def test_shipped_float_agent_reaches_its_target(env_id):
    path = trained_model_path(env_id)
    assert path.exists(), f"shipped agent missing: {path}"
    model = DQN.load(path, device="cpu")
    assert isinstance(model.policy, SpikingDQNPolicy)
    rewards, _ = evaluate_policy(
        model, make_env(env_id, seed=12345), n_eval_episodes=100, deterministic=True, return_episode_rewards=True
    )
    assert np.mean(rewards) >= TARGETS[env_id], f"{env_id}: {np.mean(rewards)} < {TARGETS[env_id]}"
    # the model card's figure is what this evaluation gives
    card = json.loads((path.parent / "eval.json").read_text())
    assert card["mean_reward"] == pytest.approx(np.mean(rewards))
