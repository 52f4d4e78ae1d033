"""Keeping the best checked weights of a fine-tuning: the quantized network's reward on the backend decides.

:func:`best_weights` makes the keeper :func:`~spiking_dqn.qat.quantization_aware_finetune`
uses in every mode: it evaluates the network's quantized program before fine-tuning, again at
every check, and restores the best weights (and optimizer state) at the end, so fine-tuning
never leaves that reward lower than it found it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

from spiking_dqn.grid import Grid
from spiking_dqn.hardware.backend import Backend, InferenceStats
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.quantization import quantize_network
from spiking_dqn.rollouts import backend_reward


class BestWeights:
    """Keeps the policy weights (and optimizer state) with the best backend reward seen."""

    def __init__(self, policy: SpikingDQNPolicy, evaluate: Callable[[], float]) -> None:
        self.policy = policy
        self.evaluate = evaluate
        self.reward_before = evaluate()
        self.reward = self.reward_before
        self.state = self._snapshot()
        self.from_qat = False

    def _snapshot(self) -> tuple[dict, dict]:
        return copy.deepcopy(self.policy.state_dict()), copy.deepcopy(self.policy.optimizer.state_dict())

    def consider(self) -> None:
        """Evaluate the current weights; keep them when they are at least as good as the best."""
        reward = self.evaluate()
        if reward >= self.reward:
            self.reward, self.state, self.from_qat = reward, self._snapshot(), True

    def restore(self) -> None:
        """Load the best weights into the policy."""
        state, optimizer_state = self.state
        self.policy.load_state_dict(state)
        self.policy.optimizer.load_state_dict(optimizer_state)


def best_weights(
    policy: SpikingDQNPolicy,
    grid: Grid,
    env_id: str | None,
    check_episodes: int,
    check_seed: int,
    runner: Backend,
    check_cost: InferenceStats,
) -> BestWeights | None:
    """The keeper of the best checked weights: the quantized network's reward on ``runner`` (None: no checks)."""
    if not check_episodes:
        return None
    net = policy.q_net.q_net

    def check() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program, _ = quantize_network(net, grid)  # = the fake-quantized forward
        return backend_reward(
            program, env_id, check_episodes, seed=check_seed, backend=runner, counter=check_cost
        ).mean_reward

    return BestWeights(policy, check)
