"""Environment helpers for spiking-dqn: observation bounds for the encoder and env makers."""

from envs.bounds import (
    BoundChoice,
    BoundSpec,
    InputActivityCheck,
    bounds_for_space,
    choose_bounds,
    get_bounds,
    register_bounds,
    registered_envs,
    registered_id,
)
from envs.make import make_env, make_vec

__all__ = [
    "BoundChoice",
    "BoundSpec",
    "InputActivityCheck",
    "bounds_for_space",
    "choose_bounds",
    "get_bounds",
    "make_env",
    "make_vec",
    "register_bounds",
    "registered_envs",
    "registered_id",
]
