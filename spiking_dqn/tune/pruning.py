"""Pruning a two-objective study: a median rule over intermediate rewards kept as trial user attributes.

Optuna (5.1) refuses ``trial.report`` and ``trial.should_prune`` in a multi-objective study,
and its pruners read only reported values. The tuner therefore keeps its own intermediate
values: every ``eval_freq`` training steps, :class:`IntermediateRewards` plays
``episodes`` greedy episodes with the float network (cheap; the chip reward is measured once,
at the end) and stores their mean reward as the trial's user attribute
``"reward_at_<step>"``, which every worker sees through the shared storage. Since a trial
deploys the weights of its best evaluation, what is judged at a step is the best value so far
(:func:`best_so_far`). The rule (:func:`should_prune`, Optuna's ``MedianPruner`` on those
values): after ``warmup_steps`` steps and before the last evaluation (when training is over
anyway), once at least ``startup_trials`` finished trials (complete or pruned) have a value at
the same step, a trial whose best value is below the median of theirs is pruned
(``TrialPruned``: state ``PRUNED``, no objective values, it counts toward the trials of the
study). Only the reward is
judged: synaptic events are not known before the chip fit, and a trial that does not learn
the task has no useful point on the front whatever its events.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from stable_baselines3.common.callbacks import BaseCallback

from spiking_dqn.rollouts import float_reward, q_network

#: Prefix of the user attributes holding a trial's intermediate rewards.
ATTR_PREFIX = "reward_at_"
#: Env seed of the first intermediate evaluation episode (apart from the chip's held-out episodes).
INTERMEDIATE_SEED = 70_000


def attr_name(step: int) -> str:
    """The user attribute of the intermediate reward at ``step``."""
    return f"{ATTR_PREFIX}{int(step)}"


def intermediate_rewards(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """A trial's intermediate rewards by training step."""
    return {int(k[len(ATTR_PREFIX):]): float(v) for k, v in trial.user_attrs.items() if k.startswith(ATTR_PREFIX)}


def best_so_far(trial: optuna.trial.FrozenTrial, step: int) -> float | None:
    """A trial's best intermediate reward up to ``step`` (None when it has none at ``step``)."""
    values = intermediate_rewards(trial)
    if step not in values:
        return None
    return max(v for s, v in values.items() if s <= step)


def should_prune(
    study: optuna.Study, number: int, step: int, value: float, startup_trials: int, warmup_steps: int
) -> bool:
    """The median rule: ``value`` (a trial's best so far at ``step``) is below the median of finished trials' best
    values up to that step.

    :param study: the study
    :param number: the judged trial's number (left out of the comparison)
    :param step: training step of the value
    :param value: the trial's best intermediate reward up to ``step``
    :param startup_trials: finished trials with a value at ``step`` needed before any pruning
    :param warmup_steps: no pruning before this many steps
    """
    if step < warmup_steps:
        return False
    others = [
        best
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.number != number and (best := best_so_far(t, step)) is not None
    ]
    if len(others) < max(startup_trials, 1):
        return False
    return value < float(np.median(others))


class IntermediateRewards(BaseCallback):
    """Every ``eval_freq`` steps: the float network's mean reward, stored in the trial and judged by the median rule.

    The weights of the best evaluation are kept (:attr:`best`), as SB3's ``EvalCallback`` keeps the best model.

    :param trial: the running Optuna trial
    :param env_id: Gymnasium id
    :param eval_freq: training steps between evaluations (0: none)
    :param episodes: greedy episodes of each evaluation
    :param startup_trials: see :func:`should_prune`
    :param warmup_steps: see :func:`should_prune`
    :param last_step: the training's last step (no pruning there: the training is over)
    """

    def __init__(self, trial: optuna.Trial, env_id: str, eval_freq: int, episodes: int, startup_trials: int,
                 warmup_steps: int, last_step: int) -> None:
        super().__init__(verbose=0)
        self.trial, self.env_id, self.eval_freq, self.episodes = trial, env_id, eval_freq, episodes
        self.startup_trials, self.warmup_steps, self.last_step = startup_trials, warmup_steps, last_step
        self.pruned_at: int | None = None
        #: The best intermediate reward so far (the latest of equal ones), its step and the policy's weights then.
        self.best: tuple[float, int, dict[str, Any]] | None = None

    def _on_step(self) -> bool:
        if not self.eval_freq or self.num_timesteps % self.eval_freq:
            return True
        step = int(self.num_timesteps)
        net = q_network(self.model)
        was_training = net.training
        net.eval()
        try:
            value = float_reward(net, self.env_id, self.episodes, seed=INTERMEDIATE_SEED).mean_reward
        finally:
            net.train(was_training)
        self.trial.set_user_attr(attr_name(step), value)
        if self.best is None or value >= self.best[0]:
            self.best = (value, step, copy.deepcopy(self.model.policy.state_dict()))
        if step < self.last_step and should_prune(self.trial.study, self.trial.number, step, self.best[0],
                                                  self.startup_trials, self.warmup_steps):
            self.pruned_at = step
            return False  # stops model.learn(); the objective raises TrialPruned
        return True
