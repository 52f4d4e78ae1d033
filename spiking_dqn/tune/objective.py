"""One trial of the tuner: train the sampled recipe, fit it to the chip, return (chip reward, synaptic events).

:func:`run_trial` samples the trial's parameters (:mod:`spiking_dqn.tune.space`), trains a
``SpikingDQN`` for ``timesteps`` steps with the intermediate float evaluations of
:mod:`spiking_dqn.tune.pruning` (the weights of the best one are kept, user attribute
``kept_step``; the final weights without intermediate evaluations), then deploys it with a cheap fit
(:func:`spiking_dqn.pipeline.fit_to_chip`: method ``"calibrate"`` and the fit's default fine-tuning
(:func:`spiking_dqn.pipeline.settings.default_qat`) unless ``qat_steps`` names one, at the trial's weight widths) and evaluates the program on ``episodes`` held-out episodes on the emulator.
Its two objective values are the program's mean held-out reward (maximized) and its synaptic
events per inference (minimized). The trial's folder ``<out>/trials/<number>/`` holds the
trained ``model.zip`` and the fit's files (``best_program.npz``, ``summary.json``); the trial's
user attributes hold the reward's standard deviation, the float reward, the entry it trained
with and where its files are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import optuna

from envs import make_vec
from spiking_dqn.dqn import SpikingDQN
from spiking_dqn.files import atomic_write
from spiking_dqn.pipeline import QATSettings, fit_to_chip
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.tune.pruning import IntermediateRewards
from spiking_dqn.tune.space import recipe_of, sample

#: The study's objectives, in order.
OBJECTIVES = ("chip reward", "synaptic events per inference")
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class TuneSettings:
    """What every trial of a study shares (recorded with the study: a study is resumed only with the same).

    :param env_id: Gymnasium id
    :param timesteps: training steps of every trial
    :param episodes: held-out episodes of the chip evaluation
    :param eval_freq: training steps between the intermediate evaluations that feed the pruner (0: none)
    :param prune_episodes: greedy episodes of each intermediate evaluation
    :param startup_trials: finished trials needed at a step before the pruner judges it
    :param seed: training seed of trial ``n`` is ``seed + n``
    :param qat_steps: fine-tuning steps of each trial's fit, distillation (``None``: the fit's default, as
        a user's ``fit_to_chip`` or ``spiking-dqn deploy`` would run; 0: none, the cheapest fit)
    """

    env_id: str
    timesteps: int
    episodes: int = 20
    eval_freq: int = 0
    prune_episodes: int = 5
    startup_trials: int = 3
    seed: int = 0
    qat_steps: int | None = None

    def fingerprint(self) -> str:
        """The settings as JSON (stored with the study and compared on resume)."""
        return json.dumps(asdict(self), sort_keys=True)

    def matches(self, fingerprint: str) -> bool:
        """Whether a study's stored settings are these (a setting it does not record has its default)."""
        stored = json.loads(fingerprint)
        defaults = {f.name: f.default for f in fields(self)}
        return all(stored.get(name, defaults[name]) == value for name, value in asdict(self).items()) and set(
            stored) <= set(defaults)


def trial_folder(out: Path, number: int) -> Path:
    """Where trial ``number`` keeps its files."""
    return Path(out) / "trials" / f"{number:04d}"


def run_trial(trial: optuna.Trial, settings: TuneSettings, out: Path) -> tuple[float, float]:
    """Train, fit to the chip and evaluate the trial's recipe.

    :param trial: the running trial (its parameters are sampled here)
    :param settings: the study's settings
    :param out: the tuner's output folder
    :return: (mean held-out chip reward, synaptic events per inference)
    :raises optuna.TrialPruned: the median rule stopped the training
    """
    params = sample(trial)
    recipe = recipe_of(settings.env_id, params)
    seed = settings.seed + trial.number
    env = make_vec(settings.env_id, n_envs=1, seed=seed)
    model = SpikingDQN(SpikingDQNPolicy, env, seed=seed, verbose=0, **recipe.hyperparams)
    callback = IntermediateRewards(
        trial, settings.env_id, settings.eval_freq, settings.prune_episodes, settings.startup_trials,
        warmup_steps=settings.eval_freq + 1, last_step=settings.timesteps,
    )
    model.learn(settings.timesteps, callback=callback)
    env.close()
    if callback.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at step {callback.pruned_at} (median rule)")
    if callback.best is not None:  # the best evaluated weights, as the recipes keep the best periodic evaluation
        model.policy.load_state_dict(callback.best[2])
        trial.set_user_attr("kept_step", callback.best[1])
    folder = trial_folder(out, trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "model.zip") as tmp:
        model.save(tmp)
    result = fit_to_chip(model, settings.env_id, method="calibrate", weight_bits=recipe.weight_bits,
                         qat=None if settings.qat_steps is None else QATSettings(steps=settings.qat_steps), eval_episodes=settings.episodes, out=folder)
    best = result.best.evaluation
    assert best is not None  # eval_episodes >= 1
    attrs: dict[str, Any] = {
        "chip_reward_std": best.std_reward,
        "float_reward": result.float_evaluation.mean_reward if result.float_evaluation else None,
        "energy_j": None if result.energy is None else float(result.energy.total_energy_j),
        "folder": str(folder),
        "seed": seed,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return float(best.mean_reward), float(best.synaptic_events_per_inference)
