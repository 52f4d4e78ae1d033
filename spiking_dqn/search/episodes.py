"""Episode evaluation of a chip program on a backend, with its cost counted.

Every figure the threshold search and the calibration report about their cost comes from
here: :func:`backend_reward` runs ``n_episodes`` episodes at once, one environment per
episode, and sends the observations of all running episodes to the backend in one batch
per environment step, so an evaluation of 10 episodes costs one backend call per step of
the longest episode, not one per step of every episode. Episode ``i`` is seeded with
``seed + i``, so two programs evaluated with the same ``seed`` face the same episodes
(common random numbers), and the result does not depend on how the episodes are batched.

:class:`EvaluationCounter` adds up what was spent: backend inferences (observations run),
backend calls (batches), episodes, synaptic events and wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from spiking_dqn.hardware import BackendResult, ChipProgram, get_backend

ActFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvaluationCounter:
    """Running totals of what evaluations spent on a backend.

    :param inferences: observations run on the backend
    :param backend_calls: backend calls (batches)
    :param episodes: episodes played on the backend
    :param synaptic_events: synaptic events summed over inferences
    :param hidden_spikes: hidden-layer spikes summed over inferences
    :param wall_time_s: wall-clock time of the evaluations (backend and environment)
    """

    inferences: int = 0
    backend_calls: int = 0
    episodes: int = 0
    synaptic_events: int = 0
    hidden_spikes: int = 0
    wall_time_s: float = 0.0

    def add_result(self, result: BackendResult) -> None:
        """Count one backend call."""
        self.inferences += result.batch_size
        self.backend_calls += 1
        self.synaptic_events += int(np.asarray(result.synaptic_events).sum())
        self.hidden_spikes += int(sum(int(c.sum()) for c in result.spike_counts[1:-1]))

    def add(self, other: EvaluationCounter) -> None:
        """Add another counter's totals to this one."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


@dataclass
class EpisodeResult:
    """Rewards of a set of episodes, and what they cost on the backend (if any).

    :param rewards: total reward of each episode
    :param lengths: steps of each episode
    :param cost: backend cost of these episodes (zeros for a float policy)
    """

    rewards: list[float]
    lengths: list[int]
    cost: EvaluationCounter = field(default_factory=EvaluationCounter)

    @property
    def mean_reward(self) -> float:
        """Mean episode reward."""
        return float(np.mean(self.rewards))

    @property
    def std_reward(self) -> float:
        """Standard deviation of the episode rewards."""
        return float(np.std(self.rewards))

    @property
    def synaptic_events_per_inference(self) -> float:
        """Mean synaptic events per backend inference (0 when none ran)."""
        return self.cost.synaptic_events / self.cost.inferences if self.cost.inferences else 0.0

    @property
    def hidden_spikes_per_inference(self) -> float:
        """Mean hidden-layer spikes per backend inference (0 when none ran)."""
        return self.cost.hidden_spikes / self.cost.inferences if self.cost.inferences else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (means and costs, not the per-episode lists)."""
        return {
            "mean_reward": self.mean_reward,
            "std_reward": self.std_reward,
            "min_reward": float(np.min(self.rewards)),
            "episodes": len(self.rewards),
            "synaptic_events_per_inference": self.synaptic_events_per_inference,
            "hidden_spikes_per_inference": self.hidden_spikes_per_inference,
            **{f"cost_{k}": v for k, v in self.cost.to_dict().items()},
        }


def _check_episodes(n_episodes: int) -> int:
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    return int(n_episodes)


def run_episodes(
    act: ActFn,
    env_id: str,
    n_episodes: int,
    seed: int = 0,
    max_parallel: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[list[float], list[int]]:
    """Play ``n_episodes`` episodes with a batched greedy policy.

    :param act: maps a batch of observations ``(n, d)`` (float32) to actions ``(n,)``
    :param env_id: Gymnasium id (the registered ``TimeLimit`` applies)
    :param n_episodes: number of episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    :param max_parallel: at most this many episodes run at once (all of them by default)
    :param env_kwargs: passed to ``gymnasium.make``
    :return: the reward and the length of every episode, in episode order
    """
    n_episodes = _check_episodes(n_episodes)
    width = n_episodes if max_parallel is None else max(1, min(int(max_parallel), n_episodes))
    rewards = [0.0] * n_episodes
    lengths = [0] * n_episodes
    for start in range(0, n_episodes, width):
        idx = list(range(start, min(start + width, n_episodes)))
        envs = [gym.make(env_id, **(env_kwargs or {})) for _ in idx]
        try:
            obs = [env.reset(seed=seed + i)[0] for env, i in zip(envs, idx)]
            active = list(range(len(idx)))
            while active:
                batch = np.stack([np.asarray(obs[j], dtype=np.float32).ravel() for j in active])
                actions = np.asarray(act(batch)).reshape(-1)
                still = []
                for j, a in zip(active, actions):
                    obs[j], r, terminated, truncated, _ = envs[j].step(int(a))
                    rewards[idx[j]] += float(r)
                    lengths[idx[j]] += 1
                    if not (terminated or truncated):
                        still.append(j)
                active = still
        finally:
            for env in envs:
                env.close()
    return rewards, lengths


def resolve_backend(backend: Any, **options: Any) -> Any:
    """A backend object from a name (``"emulator"``, ``"spinnaker2"``) or an object with ``run``."""
    if isinstance(backend, str):
        return get_backend(backend, **options)
    if not callable(getattr(backend, "run", None)):
        raise TypeError(f"backend must be a backend name or an object with run(program, obs), got {backend!r}")
    return backend


def backend_reward(
    program: ChipProgram,
    env_id: str,
    n_episodes: int = 10,
    seed: int = 0,
    backend: Any = "emulator",
    max_parallel: int | None = None,
    counter: EvaluationCounter | None = None,
) -> EpisodeResult:
    """Reward of a chip program on a backend over ``n_episodes`` greedy episodes.

    The episodes run side by side; each environment step of the running episodes is one
    backend call on their observations. The cost (inferences, backend calls, episodes,
    synaptic events, wall time) is returned in ``result.cost`` and, when ``counter`` is
    given, added to it.

    :param program: the chip program
    :param env_id: Gymnasium id
    :param n_episodes: episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    :param backend: backend name or backend object (``run(program, obs) -> BackendResult``)
    :param max_parallel: at most this many episodes per backend batch
    :param counter: a counter to add the cost to
    """
    runner = resolve_backend(backend)
    cost = EvaluationCounter()

    def act(obs: np.ndarray) -> np.ndarray:
        result = runner.run(program, obs)
        cost.add_result(result)
        return result.actions

    start = time.perf_counter()
    rewards, lengths = run_episodes(act, env_id, n_episodes, seed=seed, max_parallel=max_parallel)
    cost.wall_time_s = time.perf_counter() - start
    cost.episodes = len(rewards)
    if counter is not None:
        counter.add(cost)
    return EpisodeResult(rewards, lengths, cost)


def _q_network(model: Any) -> Any:
    """The ``SpikingQNetwork`` of a DQN model, a policy, a ``SpikingQNet`` or the network itself."""
    from spiking_dqn.network import SpikingQNetwork

    obj = model
    for attr in ("policy", "q_net", "q_net"):
        if isinstance(obj, SpikingQNetwork):
            return obj
        obj = getattr(obj, attr, obj)
    if not isinstance(obj, SpikingQNetwork):
        raise TypeError(
            "expected an SB3 DQN with spiking_dqn.SpikingDQNPolicy, its policy, or a SpikingQNetwork; "
            f"got {type(model).__name__}"
        )
    return obj


def q_network(model: Any) -> Any:
    """The :class:`~spiking_dqn.network.SpikingQNetwork` inside a model, policy or network."""
    return _q_network(model)


def float_reward(model: Any, env_id: str, n_episodes: int = 100, seed: int = 0) -> EpisodeResult:
    """Reward of the float spiking Q-network (greedy) over the same episodes as :func:`backend_reward`.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy, or a ``SpikingQNetwork``
    :param env_id: Gymnasium id
    :param n_episodes: episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    """
    net = _q_network(model)
    device = next(net.parameters()).device

    def act(obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            return net(th.as_tensor(obs, device=device)).argmax(1).cpu().numpy()

    start = time.perf_counter()
    rewards, lengths = run_episodes(act, env_id, n_episodes, seed=seed)
    cost = EvaluationCounter(episodes=len(rewards), wall_time_s=time.perf_counter() - start)
    return EpisodeResult(rewards, lengths, cost)


def record_observations(
    model: Any, env_id: str, n_observations: int = 256, seed: int = 10_000, n_episodes: int = 4
) -> np.ndarray:
    """Observations visited by the float policy (greedy), for calibration.

    Plays episodes of the float network on the host (no backend), ``n_episodes`` at a time
    until at least ``n_observations`` states were visited (at most 100 rounds), and draws
    ``n_observations`` of the visited states evenly over all of them.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy, or a ``SpikingQNetwork``
    :param env_id: Gymnasium id
    :param n_observations: observations to return
    :param seed: seed of the first episode
    :param n_episodes: episodes per round
    :return: ``(n_observations, d)`` float32
    """
    if n_observations < 1:
        raise ValueError(f"n_observations must be positive, got {n_observations}")
    net = _q_network(model)
    device = next(net.parameters()).device
    seen: list[np.ndarray] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        with th.no_grad():
            return net(th.as_tensor(obs, device=device)).argmax(1).cpu().numpy()

    n_episodes = _check_episodes(n_episodes)
    for round_ in range(100):
        run_episodes(act, env_id, n_episodes, seed=seed + round_ * n_episodes)
        if sum(len(o) for o in seen) >= n_observations:
            break
    all_obs = np.concatenate(seen).astype(np.float32)
    if len(all_obs) <= n_observations:
        return all_obs
    pick = np.linspace(0, len(all_obs) - 1, n_observations).round().astype(int)
    return all_obs[pick]


def sequence_str(values: Sequence[float]) -> str:
    """Compact string of a list of floats, for messages."""
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
