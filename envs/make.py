"""Helpers that make monitored (vectorised) environments for training and evaluation."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """One environment wrapped in SB3's ``Monitor`` (episode reward and length).

    :param env_id: Gymnasium id
    :param seed: seed of its first reset and of the action space
    :param kwargs: passed to ``gymnasium.make``
    """
    env = Monitor(gym.make(env_id, **kwargs))
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vec(env_id: str, n_envs: int = 1, seed: int | None = None, **kwargs: Any) -> VecEnv:
    """``n_envs`` monitored copies of an environment in a ``DummyVecEnv``.

    :param env_id: Gymnasium id
    :param n_envs: number of copies
    :param seed: seed of the first copy (the others get ``seed + i``)
    :param kwargs: passed to ``gymnasium.make``
    """
    return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs or None)
