"""The tuner's search space, declared once: SB3 DQN hyperparameters, spiking options and the chip's weight widths.

:data:`SPACE` lists every parameter a trial samples, with its range and where it goes (a ``DQN``
keyword argument, a spiking option of ``policy_kwargs``, or an option of the fit to the chip).
The same declaration serves:

* :func:`sample`: a trial's parameters (``trial.suggest_*``), used by the tuner and by rl-zoo's
  sampler with the spiking settings kept (:mod:`spiking_dqn.zoo`);
* :func:`base_params`: the env's entry of ``zoo_configs/dqn.yml`` (or the package defaults)
  expressed in the space, snapped into its ranges: the study's first trial;
* :func:`recipe_of`: a trial's parameters on top of the env's entry: the ``DQN`` keyword
  arguments to train with and the weight widths to deploy at; :func:`spiking_options` applies
  the spiking ones to any ``policy_kwargs`` (also rl-zoo's sampler's);
* :func:`zoo_entry`: a trial as a ``zoo_configs/dqn.yml`` entry (``spiking-dqn tune --export``).

Derived parameters: ``net_arch = [hidden_width] * hidden_layers``; ``gradient_steps =
max(train_freq // subsample_steps, 1)`` (rl-zoo's own rule); ``obs_bound`` = the entry's
encoder bounds (else the env's registered or finite space bounds) times ``obs_scale``;
``threshold_noise`` = ASPEN's ``U(1, 1 + aspen_noise)`` (0: off).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym

from envs import bounds_for_space, registered_envs
from spiking_dqn.config import SpikingConfig
from spiking_dqn.dqn import learning_rate_schedule
from spiking_dqn.recipes.hyperparams import SPIKING_POLICY, hyperparams_for

Target = Literal["dqn", "policy", "derived", "fit"]


@dataclass(frozen=True)
class Param:
    """One parameter of the search space.

    :param name: the parameter's name in the study
    :param target: ``"dqn"`` (a ``DQN`` keyword argument of that name), ``"policy"`` (a spiking
        option of ``policy_kwargs`` of that name), ``"derived"`` (feeds a derived option, see the
        module docstring) or ``"fit"`` (an option of the fit to the chip)
    :param low: lower bound (numbers)
    :param high: upper bound (numbers)
    :param log: sample on a log scale
    :param choices: the values of a categorical parameter
    :param integer: an integer range
    """

    name: str
    target: Target
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this parameter (``trial.suggest_*``)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def snap(self, value: Any) -> Any:
        """``value`` moved into the space: the nearest choice (log distance for positive numbers), or clipped."""
        if self.choices is not None:
            if value in self.choices or not isinstance(value, (int, float)):
                return next((c for c in self.choices if c == value), self.choices[0])

            def distance(choice: float) -> float:
                if choice > 0 and value > 0:
                    return abs(math.log(choice) - math.log(value))
                return abs(choice - value) + (1e9 if (choice > 0) != (value > 0) else 0.0)

            return min(self.choices, key=distance)
        clipped = min(max(value, self.low), self.high)
        return int(round(clipped)) if self.integer else float(clipped)


#: The search space. Ranges: around rl-zoo's DQN space (learning rate, batch, buffer, train
#: frequency and subsampling, target update, exploration, gamma) and the spiking options'
#: useful ranges (ticks above the readout delay of two hidden layers).
SPACE: tuple[Param, ...] = (
    Param("learning_rate", "dqn", 5e-5, 1e-2, log=True),
    Param("batch_size", "dqn", choices=(32, 64, 128, 256)),
    Param("buffer_size", "dqn", choices=(10_000, 50_000, 100_000)),
    Param("learning_starts", "dqn", choices=(0, 1000, 5000)),
    Param("gamma", "dqn", choices=(0.95, 0.98, 0.99, 0.995, 0.999)),
    Param("train_freq", "dqn", choices=(1, 4, 16, 64, 128, 256)),
    Param("subsample_steps", "derived", choices=(1, 2, 4, 8)),
    Param("target_update_interval", "dqn", choices=(1, 10, 100, 250, 1000, 5000)),
    Param("exploration_fraction", "dqn", 0.05, 0.5),
    Param("exploration_final_eps", "dqn", 0.0, 0.2),
    Param("ticks", "policy", 6, 32, integer=True),
    Param("hidden_layers", "derived", choices=(1, 2)),
    Param("hidden_width", "derived", choices=(16, 32, 64, 128, 256)),
    Param("threshold", "policy", 0.5, 2.0),
    Param("beta", "policy", 0.7, 1.0),
    Param("encoding", "policy", choices=("deterministic", "poisson", "hybrid")),
    Param("obs_scale", "derived", 0.5, 2.0, log=True),
    Param("aspen_noise", "derived", choices=(0.0, 0.25, 0.5)),
    Param("activity_penalty", "policy", choices=(0.0, 1e-6, 1e-5, 1e-4)),
    Param("weight_bits", "fit", choices=(4, 5, 6, 8)),
)
#: The parameters by name.
PARAMS: dict[str, Param] = {p.name: p for p in SPACE}
#: Significant digits of the floats an exported entry writes.
EXPORT_DIGITS = 4


@dataclass(frozen=True)
class TrialRecipe:
    """What one trial trains and deploys.

    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included (the env's entry with the trial's
        values)
    :param weight_bits: bits per chip weight of the deployed program
    """

    hyperparams: dict[str, Any]
    weight_bits: int


def sample(trial: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The trial's parameters, one ``trial.suggest_*`` per parameter of :data:`SPACE`.

    :param trial: an Optuna trial
    :param names: only these parameters (default: all, in the space's order)
    """
    return {p.name: p.suggest(trial) for p in SPACE if names is None or p.name in names}


def base_params(env_id: str) -> dict[str, Any]:
    """The env's entry of ``zoo_configs/dqn.yml`` (else the package defaults) in the space, snapped into it."""
    hyperparams, _, _ = hyperparams_for(env_id)
    policy = hyperparams.get("policy_kwargs", {})
    config = SpikingConfig(**{k: v for k, v in policy.items() if k in _SPIKING_FIELDS})
    train_freq = hyperparams.get("train_freq", 4)
    train_freq = train_freq[0] if isinstance(train_freq, (list, tuple)) else train_freq
    gradient_steps = hyperparams.get("gradient_steps", 1)
    noise = config.threshold_noise
    values: dict[str, Any] = {p.name: hyperparams[p.name] for p in SPACE if p.target == "dqn" and p.name in hyperparams}
    if isinstance(values.get("learning_rate"), str):  # rl-zoo's lin_<value>: the space's rates are constant; its start
        values["learning_rate"] = learning_rate_schedule(values["learning_rate"])(1.0)
    values.update({p.name: getattr(config, p.name) for p in SPACE if p.target == "policy"})
    values.update(
        train_freq=train_freq,
        subsample_steps=1 if gradient_steps < 0 else max(train_freq / max(gradient_steps, 1), 1),
        hidden_layers=len(config.net_arch),
        hidden_width=max(config.net_arch),
        obs_scale=1.0,
        aspen_noise=0.0 if noise is None or noise.levels is not None else noise.high - 1.0,
        weight_bits=8,
    )
    defaults = _space_defaults()
    return {p.name: p.snap(values.get(p.name, defaults[p.name])) for p in SPACE}


def recipe_of(env_id: str, params: Mapping[str, Any]) -> TrialRecipe:
    """The ``DQN`` keyword arguments and weight widths of a trial: the env's entry with the trial's values.

    :param env_id: Gymnasium id
    :param params: the trial's parameters (all of :data:`SPACE`)
    :raises ValueError: spiking options :class:`~spiking_dqn.config.SpikingConfig` refuses
    """
    hyperparams, _, _ = hyperparams_for(env_id)
    hyperparams = copy.deepcopy(hyperparams)
    hyperparams.update({p.name: params[p.name] for p in SPACE if p.target == "dqn"})
    hyperparams["gradient_steps"] = max(int(params["train_freq"]) // int(params["subsample_steps"]), 1)
    hyperparams["policy_kwargs"] = spiking_options(env_id, params, hyperparams.get("policy_kwargs", {}))
    return TrialRecipe(hyperparams, int(params["weight_bits"]))


def spiking_options(env_id: str, params: Mapping[str, Any], policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` with the spiking parameters of ``params`` applied, the derived ones included.

    Only the parameters present in ``params`` are applied (rl-zoo's sampler samples a subset):
    the spiking options by name, ``net_arch = [hidden_width] * hidden_layers``,
    ``threshold_noise = [1, 1 + aspen_noise]`` (0: off), ``obs_bound`` = the encoder bounds of
    ``policy_kwargs`` (else the env's) times ``obs_scale`` (4 significant digits, as exported).

    :param env_id: Gymnasium id (its encoder bounds, for ``obs_scale``)
    :param params: the trial's parameters
    :param policy_kwargs: the entry's ``policy_kwargs``
    :raises ValueError: spiking options :class:`~spiking_dqn.config.SpikingConfig` refuses
    """
    policy = dict(policy_kwargs)
    policy.update({p.name: params[p.name] for p in SPACE if p.target == "policy" and p.name in params})
    if "hidden_width" in params or "hidden_layers" in params:
        width = int(params.get("hidden_width", max(policy.get("net_arch", [64]))))
        policy["net_arch"] = [width] * int(params.get("hidden_layers", len(policy.get("net_arch", [64, 64]))))
    if "aspen_noise" in params:
        noise = float(params["aspen_noise"])
        policy["threshold_noise"] = [1.0, 1.0 + noise] if noise > 0 else None
    if float(params.get("obs_scale", 1.0)) != 1.0:
        scale = float(params["obs_scale"])
        policy["obs_bound"] = [_round(b * scale) for b in encoder_bounds(env_id, policy_kwargs)]
    SpikingConfig(**{k: v for k, v in policy.items() if k in _SPIKING_FIELDS})
    return policy


def encoder_bounds(env_id: str, policy_kwargs: Mapping[str, Any]) -> list[float]:
    """The encoder bounds a policy with ``policy_kwargs`` gets on ``env_id`` (what ``obs_scale`` multiplies).

    :param env_id: Gymnasium id
    :param policy_kwargs: the entry's ``policy_kwargs`` (its ``obs_bound`` when it has one)
    :raises ValueError: an observation space the spike encoder cannot bound
    """
    given = policy_kwargs.get("obs_bound")
    if given is None and env_id in registered_envs():
        given = env_id
    env = gym.make(env_id)
    try:
        return [float(b) for b in bounds_for_space(env.observation_space, given)]
    finally:
        env.close()


def zoo_entry(env_id: str, params: Mapping[str, Any], timesteps: int) -> dict[str, Any]:
    """A trial as an rl-zoo entry: ``n_timesteps``, ``policy``, the ``DQN`` keyword arguments and
    ``policy_kwargs`` as a ``dict(...)`` string of literals (as ``zoo_configs/dqn.yml`` writes it).

    :param env_id: Gymnasium id
    :param params: the trial's parameters
    :param timesteps: the training steps of the entry
    """
    hyperparams = recipe_of(env_id, params).hyperparams
    policy = {k: _plain(v) for k, v in hyperparams.pop("policy_kwargs").items() if v is not None}
    entry: dict[str, Any] = {"n_timesteps": int(timesteps), "policy": SPIKING_POLICY}
    entry.update({k: _plain(v) for k, v in hyperparams.items()})
    entry["policy_kwargs"] = "dict(" + ", ".join(f"{k}={v!r}" for k, v in policy.items()) + ")"
    return entry


_SPIKING_FIELDS = frozenset(SpikingConfig.__dataclass_fields__)


def _space_defaults() -> dict[str, Any]:
    """A value inside the space for every parameter (what the package's defaults do not name)."""
    out = {}
    for p in SPACE:
        if p.choices is not None:
            out[p.name] = p.choices[0]
        else:
            out[p.name] = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
    return out


def _round(value: float) -> float:
    return float(f"{value:.{EXPORT_DIGITS}g}")


def _plain(value: Any) -> Any:
    """Plain YAML/literal values: floats rounded to :data:`EXPORT_DIGITS` digits, tuples as lists."""
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
