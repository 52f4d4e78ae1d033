"""Registry of observation bounds for the spike encoder.

The encoder maps each observation dimension to ``clip(obs / bound, -1, 1)``, so every
dimension needs a finite positive bound. Finite dimensions take their bound from the
observation space (``max(|low|, |high|)``); the dimensions a Gymnasium space leaves
unbounded get the documented bounds registered here, chosen from the range the
dimension actually takes in episodes (values beyond it saturate the encoder, which
is harmless for these tasks).

A registered bound may also be tighter than a finite space bound where the episode
cannot reach the space bound: a rate code with ``T`` ticks resolves only about ``T``
levels per dimension, so range the episode never uses is resolution thrown away. Such
overrides only apply to spaces with an unbounded dimension (resolved through the
registry); a fully bounded space always uses its own bounds, so that a policy built from
the space alone gets the same encoder as one built from the env id.

:func:`choose_bounds` says which bounds it chose and why (:class:`BoundChoice`); a space
with unbounded dimensions takes a registered env's bounds when that env's id is given
(``obs_bound="CartPole-v1"``; ``SpikingDQN`` passes its env's id) or, marked as a
look-alike that the policy warns about, when the space merely equals that env's space.
:class:`InputActivityCheck` warns when the bounds leave the encoder almost silent on the
first observations (e.g. a custom env's ``Box(-1e6, 1e6)``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

_SUPPLY_HINT = (
    "pass finite bounds explicitly, e.g. policy_kwargs=dict(obs_bound=[...]) or "
    "envs.get_bounds(env_id, bounds=[...]), or register them with envs.register_bounds()"
)


@dataclass(frozen=True)
class BoundSpec:
    """Bounds of one environment's observations.

    :param low: the observation space's lower bounds (may hold ``-inf``)
    :param high: the observation space's upper bounds (may hold ``inf``)
    :param unbounded: encoder bounds for the dimensions the space leaves infinite, or where
        the episode ends well inside the space bound, ``{dim: bound}``
    :param note: where the unbounded-dimension bounds come from
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    unbounded: dict[int, float]
    note: str

    def bound(self) -> np.ndarray:
        """The encoder bound, one finite positive float per dimension."""
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        out = np.maximum(np.abs(low), np.abs(high))
        for dim, value in self.unbounded.items():
            out[dim] = value
        return out.astype(np.float32)


_INF = float("inf")
_CARTPOLE = BoundSpec(
    low=(-4.8, -_INF, -0.41887903, -_INF),
    high=(4.8, _INF, 0.41887903, _INF),
    # The episode terminates at |x| > 2.4 and |angle| > 0.2095 rad (12 degrees), half the
    # space bounds, so those are the encoder bounds. The velocities are unbounded in the
    # space; a balancing policy keeps them within about +-1.5 (cart) and +-2 rad/s (pole),
    # and larger values saturate the encoder, which is harmless (they precede a failure).
    unbounded={0: 2.4, 1: 1.5, 2: 0.2095, 3: 2.0},
    note="termination bounds for position (2.4) and angle (0.2095 rad); velocities 1.5 and 2.0 (episode range)",
)
_REGISTRY: dict[str, BoundSpec] = {
    "CartPole-v0": _CARTPOLE,
    "CartPole-v1": _CARTPOLE,
    "Acrobot-v1": BoundSpec(
        low=(-1.0, -1.0, -1.0, -1.0, -12.566371, -28.274334),
        high=(1.0, 1.0, 1.0, 1.0, 12.566371, 28.274334),
        unbounded={},
        note="all dimensions bounded by the space (angular velocities 4*pi and 9*pi)",
    ),
    "MountainCar-v0": BoundSpec(
        low=(-1.2, -0.07),
        high=(0.6, 0.07),
        unbounded={},
        note="all dimensions bounded by the space",
    ),
    "LunarLander-v3": BoundSpec(
        low=(-2.5, -2.5, -10.0, -10.0, -6.2831855, -10.0, 0.0, 0.0),
        high=(2.5, 2.5, 10.0, 10.0, 6.2831855, 10.0, 1.0, 1.0),
        unbounded={},
        note="all dimensions bounded by the space (Gymnasium >= 1.0)",
    ),
}


def register_bounds(env_id: str, spec: BoundSpec) -> None:
    """Register (or replace) the bounds of an environment.

    :param env_id: Gymnasium id
    :param spec: its bounds
    """
    bound = spec.bound()
    if not np.all(np.isfinite(bound)) or np.any(bound <= 0):
        raise ValueError(f"bounds for {env_id} must be finite and positive, got {bound}")
    _REGISTRY[env_id] = spec


def registered_envs() -> list[str]:
    """Ids of the environments with registered bounds."""
    return sorted(_REGISTRY)


def _validate(bound: np.ndarray, what: str) -> np.ndarray:
    bound = np.asarray(bound, dtype=np.float32).reshape(-1)
    if bound.size == 0 or not np.all(np.isfinite(bound)) or np.any(bound <= 0):
        raise ValueError(f"{what} must be finite and positive in every dimension, got {bound}")
    return bound


def get_bounds(env_id: str, bounds: np.ndarray | list[float] | None = None) -> np.ndarray:
    """Encoder bounds of a registered environment, or the ``bounds`` given.

    :param env_id: Gymnasium id
    :param bounds: explicit bounds, which take precedence
    :raises KeyError: the environment has no registered bounds and none were given
    """
    if bounds is not None:
        return _validate(np.asarray(bounds), f"bounds for {env_id}")
    if env_id not in _REGISTRY:
        raise KeyError(f"no observation bounds registered for {env_id!r}; {_SUPPLY_HINT}")
    return _REGISTRY[env_id].bound()


@dataclass(frozen=True)
class BoundChoice:
    """The encoder bounds chosen for an observation space, and why.

    :param bound: one finite positive float32 per dimension
    :param reason: where they come from, in words (printed by warnings and the CLI)
    :param lookalike: the registered env whose bounds were taken only because the space
        equals its observation space (the env id was not given), else ``None``
    """

    bound: np.ndarray
    reason: str
    lookalike: str | None = None

    def shown(self) -> list[float]:
        """The bounds as short floats (6 significant digits), for messages."""
        return [float(f"{x:.6g}") for x in self.bound]


def choose_bounds(space: spaces.Space, bounds: np.ndarray | list[float] | str | None = None) -> BoundChoice:
    """Encoder bounds for an observation space, with the reason for the choice.

    Resolution order: explicit ``bounds`` (an array, or a registered env id as a string);
    the space's own bounds when they are all finite; else, when the space equals a
    registered environment's observation space (e.g. CartPole's, whose velocities are
    unbounded), that environment's bounds, marked as a look-alike (:attr:`BoundChoice.lookalike`):
    the policy warns about that choice unless its bounds are then loaded from a saved model.

    :param space: a 1-D ``Box`` observation space
    :param bounds: explicit bounds or a registered env id
    :raises ValueError: the space is not a 1-D Box, or it has unbounded dimensions that
        nothing registered covers (the message says how to supply bounds)
    """
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"the spike encoder needs a 1-D Box observation space, got {space}")
    dim = space.shape[0]
    if isinstance(bounds, str):
        choice = BoundChoice(get_bounds(bounds), f"the registered bounds of {bounds} (obs_bound={bounds!r}): "
                             f"{_REGISTRY[bounds].note}")
    elif bounds is not None:
        choice = BoundChoice(_validate(np.asarray(bounds), "obs_bound"), "obs_bound, as given")
    else:
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            choice = BoundChoice(_validate(np.maximum(np.abs(low), np.abs(high)), "observation space bounds"),
                                 "the observation space's finite bounds, max(|low|, |high|)")
        else:
            choice = _lookalike(space, low, high)
    if choice.bound.size != dim:
        raise ValueError(f"bounds have {choice.bound.size} entries but the observation space has {dim} dimensions")
    return choice


def _lookalike(space: spaces.Box, low: np.ndarray, high: np.ndarray) -> BoundChoice:
    """The bounds of the registered env whose observation space equals ``space`` (one with unbounded dimensions)."""
    for env_id, spec in _REGISTRY.items():
        if (
            len(spec.low) == low.size
            and np.allclose(spec.low, low, rtol=1e-6)
            and np.allclose(spec.high, high, rtol=1e-6)
        ):
            reason = (
                f"the registered bounds of {env_id} ({spec.note}), taken because the observation space equals "
                f"{env_id}'s and no env id was given; pass obs_bound={env_id!r} to name them, or "
                "obs_bound=[...] for an env that only shares the space"
            )
            return BoundChoice(spec.bound(), reason, lookalike=env_id)
    infinite = [int(i) for i in np.nonzero(~(np.isfinite(low) & np.isfinite(high)))[0]]
    raise ValueError(
        f"observation dimension(s) {infinite} of {space} are unbounded and no registered "
        f"environment matches this space; {_SUPPLY_HINT}"
    )


def bounds_for_space(space: spaces.Space, bounds: np.ndarray | list[float] | str | None = None) -> np.ndarray:
    """The encoder bounds :func:`choose_bounds` chooses (without the reason).

    :param space: a 1-D ``Box`` observation space
    :param bounds: explicit bounds or a registered env id
    """
    return choose_bounds(space, bounds).bound


def registered_id(env: Any) -> str | None:
    """The Gymnasium id of an env (or of the first env of a VecEnv) when its bounds are registered, else ``None``.

    :param env: a Gymnasium env, an SB3 ``VecEnv``, or anything else (``None``)
    """
    try:
        spec = env.get_attr("spec", [0])[0] if hasattr(env, "get_attr") else getattr(env, "spec", None)
    except Exception:  # a VecEnv whose envs hold no spec attribute
        return None
    env_id = getattr(spec, "id", None)
    return env_id if env_id in _REGISTRY else None


#: Observations :class:`InputActivityCheck` looks at before judging the encoder's activity.
CHECKED_OBSERVATIONS = 100
#: Share of (observation, dimension) values that drive no input spike above which the encoder counts as almost silent.
SILENT_SHARE = 0.9


class InputActivityCheck:
    """Warns once when the chosen bounds leave the encoder almost silent on the first observations.

    A dimension value drives about ``min(|obs| / bound, 1) * ticks`` input spikes per
    inference (every encoding mode: the deterministic accumulator's count, the expected
    Poisson count); below one it usually drives none. After :data:`CHECKED_OBSERVATIONS`
    distinct observations (the first replay batches repeat the few states stored), if more
    than :data:`SILENT_SHARE` of their values drive none, the
    network is nearly blind: a ``UserWarning`` names the bounds, why they were chosen, the
    largest ``|obs|`` seen per dimension and the option that fixes it (``obs_bound=``).

    :param choice: the bounds and their reason
    :param ticks: ticks per inference
    """

    def __init__(self, choice: BoundChoice, ticks: int) -> None:
        self.choice, self.ticks = choice, int(ticks)
        self.seen: list[np.ndarray] = []
        self.count = 0
        self.done = False

    def see(self, obs: np.ndarray) -> None:
        """Take a batch of observations ``(n, d)``; judge (and maybe warn) once enough were seen."""
        if self.done:
            return
        obs = np.abs(np.asarray(obs, dtype=np.float64).reshape(-1, self.choice.bound.size))
        distinct = np.unique(np.concatenate([*self.seen, obs]), axis=0)
        self.seen, self.count = [distinct], distinct.shape[0]
        if self.count >= CHECKED_OBSERVATIONS:
            self.done = True
            message = self.verdict(distinct[:CHECKED_OBSERVATIONS])
            self.seen = []
            if message:
                warnings.warn(message, UserWarning, stacklevel=3)

    def verdict(self, obs: np.ndarray) -> str | None:
        """The warning for these observations ``|obs|`` (``(n, d)``), or ``None`` when the encoder is active enough."""
        bound = self.choice.bound.astype(np.float64)
        silent = np.minimum(obs / bound, 1.0) * self.ticks < 1.0
        share = float(silent.mean())
        if share <= SILENT_SHARE:
            return None
        largest = obs.max(axis=0)
        return (
            f"the spike encoder is almost silent: {share:.0%} of {obs.shape[0]} distinct first observations' values "
            f"drive no input spike in {self.ticks} ticks (|obs| / bound < 1 / ticks). Bounds {self.choice.shown()} "
            f"were chosen from {self.choice.reason}; the largest |obs| seen per dimension is "
            f"{np.round(largest, 6).tolist()}. Pass bounds near the observations' range, e.g. "
            "policy_kwargs=dict(obs_bound=[...]) or --obs-bound"
        )
