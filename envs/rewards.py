"""Each task's worst reward: the zero of the normalised reward ``(R - R_worst) / (R_float - R_worst)``.

The studies (threshold search, energy, precision, robustness) and the shipped-agent tests report
chip rewards on this one scale, so that their percentages compare.
"""

from __future__ import annotations

import gymnasium as gym

#: The task's worst possible episode reward where it has one (CartPole: 0, no step survived;
#: Acrobot and MountainCar: -500 and -200, never reaching the goal). A task without a bounded
#: minimum (LunarLander: a crash costs any amount) has ``None``: a study takes the uniformly
#: random policy's mean reward on the same episodes instead.
WORST_REWARD: dict[str, float | None] = {
    "CartPole-v0": 0.0, "CartPole-v1": 0.0, "Acrobot-v1": -500.0, "MountainCar-v0": -200.0, "LunarLander-v3": None,
}

#: The mean reward over 100 held-out episodes that a task's recipe aims for, float and on the chip;
#: the seed reports (``benchmarks/robustness.py``) count the training seeds that reach it.
#: CartPole-v0: Gymnasium's "solved" threshold; the others: issue 26's targets on the chip, next to
#: rl-zoo's DQN figures (CartPole-v1 500, Acrobot-v1 -76.6, LunarLander -> 154.4, MountainCar-v0 -100.8).
TARGET_REWARD: dict[str, float] = {
    "CartPole-v0": 195.0, "CartPole-v1": 495.0, "Acrobot-v1": -80.0, "LunarLander-v3": 150.0, "MountainCar-v0": -110.0,
}


def worst_reward(env_id: str, random_reward: float | None = None) -> float:
    """The zero of ``env_id``'s normalised scale: :data:`WORST_REWARD`, else ``random_reward``.

    :param env_id: Gymnasium id
    :param random_reward: the random policy's mean reward, for a task without a bounded minimum
    :raises ValueError: a task with no entry, or without a bounded minimum and no ``random_reward``
    """
    worst = WORST_REWARD.get(env_id, random_reward)
    if worst is None:
        if random_reward is None:
            raise ValueError(f"{env_id} has no worst reward in envs.rewards.WORST_REWARD: pass the random policy's reward")
        return float(random_reward)
    return float(worst)


def random_reward(env_id: str, episodes: int, seed: int) -> float:
    """Mean reward of a uniformly random policy on ``episodes`` episodes (episode i reset with ``seed + i``).

    :param env_id: Gymnasium id
    :param episodes: episodes to play
    :param seed: env seed of the first episode (the action sampler of episode i is seeded with ``seed + i`` too)
    """
    env = gym.make(env_id)
    total = 0.0
    for i in range(episodes):
        env.reset(seed=seed + i)
        env.action_space.seed(seed + i)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes
