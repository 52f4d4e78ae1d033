"""Environment helpers for spiking-dqn: observation bounds for the encoder and env makers."""

from envs.bounds import BoundSpec, bounds_for_space, get_bounds, register_bounds, registered_envs
from envs.make import make_env, make_vec

__all__ = [
    "BoundSpec",
    "bounds_for_space",
    "get_bounds",
    "make_env",
    "make_vec",
    "register_bounds",
    "registered_envs",
]
