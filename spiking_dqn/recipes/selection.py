"""Which model a training keeps: the best periodic evaluations, played again on the same fresh episodes.

SB3's ``EvalCallback`` keeps the model of the best periodic evaluation. Of some 40 evaluations
of 50 episodes each, the best one is also the luckiest: its figure overrates the model, and a
model a few steps apart that is truly better can lose to it on the luck of its episodes.
:class:`TopModels` keeps the models of the ``keep`` best evaluations instead (``keep=1``: the
one ``EvalCallback`` keeps), and :func:`reselect` plays each of them again on the same fresh
episodes (seeds from :data:`RESELECT_SEED`, shared with no other evaluation of the package)
and keeps the one with the best reward there: a choice among few candidates on episodes that
did not choose them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from spiking_dqn.rollouts import float_reward
from spiking_dqn.semantics.checks import check_int

#: Env seed of the first episode that :func:`reselect` plays (the periodic evaluations draw
#: theirs from the training seed + 1000, the fits' from 0 to 150,000, the final evaluation's from 12345).
RESELECT_SEED = 200_000


def model_bytes(model: DQN) -> bytes:
    """``model.save`` into memory (the zip file SB3 writes)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


@dataclass
class Candidate:
    """A model kept from a periodic evaluation.

    :param timesteps: the training step of the evaluation
    :param evaluation: its mean reward in that evaluation
    :param model: the model as SB3 saves it
    """

    timesteps: int
    evaluation: float
    model: bytes = field(repr=False)


class TopModels(BaseCallback):
    """``EvalCallback``'s ``callback_after_eval``: the models of the ``keep`` best evaluations so far.

    :attr:`candidates` holds them best first, the earlier first on equal rewards, so that with
    ``keep=1`` the kept model is the one ``EvalCallback`` calls its best (the first evaluation
    with the highest mean reward).

    :param keep: how many models to keep (at least 1)
    """

    def __init__(self, keep: int = 1) -> None:
        super().__init__()
        check_int(keep, "keep", 1)
        self.keep = keep
        self.candidates: list[Candidate] = []

    @property
    def best(self) -> bytes | None:
        """The model of the best evaluation (None before the first evaluation)."""
        return self.candidates[0].model if self.candidates else None

    def _on_step(self) -> bool:
        reward = float(self.parent.last_mean_reward)
        if len(self.candidates) < self.keep or reward > self.candidates[-1].evaluation:
            self.candidates.append(Candidate(int(self.num_timesteps), reward, model_bytes(self.model)))
            self.candidates.sort(key=lambda candidate: -candidate.evaluation)  # stable: earlier first on ties
            del self.candidates[self.keep:]
        return True


def reselect(candidates: list[Candidate], env_id: str, episodes: int, seed: int = RESELECT_SEED,
             progress: bool = False) -> tuple[Candidate, dict[str, Any]]:
    """Play every candidate's model (greedy, float) on the same ``episodes`` episodes; keep the best.

    :param candidates: the kept models (:attr:`TopModels.candidates`: best evaluation first,
        which wins a tie)
    :param env_id: Gymnasium id
    :param episodes: episodes per candidate; episode ``i`` is reset with ``seed + i``
    :param seed: env seed of the first episode
    :param progress: show a progress bar
    :return: the chosen candidate and the record of the choice (plain data: each candidate's
        step, evaluation and reward on these episodes, the chosen step)
    :raises ValueError: no candidate, or ``episodes`` below 1
    """
    if not candidates:
        raise ValueError("reselect needs at least one candidate model")
    check_int(episodes, "episodes", 1)
    rewards = []
    for candidate in tqdm(candidates, desc="reselect", disable=not progress):
        model = DQN.load(io.BytesIO(candidate.model), device="cpu")
        rewards.append(float_reward(model, env_id, episodes, seed=seed).mean_reward)
    chosen = max(range(len(candidates)), key=lambda i: (rewards[i], -i))
    return candidates[chosen], {
        "episodes": episodes,
        "seed": seed,
        "candidates": [{"timesteps": c.timesteps, "evaluation": c.evaluation, "reward": r}
                       for c, r in zip(candidates, rewards)],
        "kept_timesteps": candidates[chosen].timesteps,
    }
