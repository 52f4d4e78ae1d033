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
"""

from __future__ import annotations

from dataclasses import dataclass

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


def bounds_for_space(space: spaces.Space, bounds: np.ndarray | list[float] | str | None = None) -> np.ndarray:
    """Encoder bounds for an observation space.

    Resolution order: explicit ``bounds`` (an array, or a registered env id as a string);
    the space's own bounds when they are all finite; the registered environment whose
    observation space is this one (e.g. CartPole's velocities).

    :param space: a 1-D ``Box`` observation space
    :param bounds: explicit bounds or a registered env id
    :raises ValueError: the space is not a 1-D Box, or it has unbounded dimensions that
        nothing registered covers (the message says how to supply bounds)
    """
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"the spike encoder needs a 1-D Box observation space, got {space}")
    dim = space.shape[0]
    if isinstance(bounds, str):
        out = get_bounds(bounds)
    elif bounds is not None:
        out = _validate(np.asarray(bounds), "obs_bound")
    else:
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            out = _validate(np.maximum(np.abs(low), np.abs(high)), "observation space bounds")
        else:
            for spec in _REGISTRY.values():
                if (
                    len(spec.low) == dim
                    and np.allclose(spec.low, low, rtol=1e-6)
                    and np.allclose(spec.high, high, rtol=1e-6)
                ):
                    return spec.bound()
            infinite = [int(i) for i in np.nonzero(~(np.isfinite(low) & np.isfinite(high)))[0]]
            raise ValueError(
                f"observation dimension(s) {infinite} of {space} are unbounded and no registered "
                f"environment matches this space; {_SUPPLY_HINT}"
            )
    if out.size != dim:
        raise ValueError(f"bounds have {out.size} entries but the observation space has {dim} dimensions")
    return out
