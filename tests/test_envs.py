import gymnasium as gym
import numpy as np
import pytest

from envs import BoundSpec, bounds_for_space, get_bounds, make_env, make_vec, register_bounds, registered_envs


@pytest.mark.parametrize("env_id", ["CartPole-v0", "CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"])
def test_registered_bounds_are_finite_and_positive(env_id):
    bound = get_bounds(env_id)
    assert np.all(np.isfinite(bound)) and np.all(bound > 0)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_registry_matches_the_real_observation_space(env_id):
    env = gym.make(env_id)
    assert len(get_bounds(env_id)) == env.observation_space.shape[0]
    # resolving from the space alone finds the registered bounds
    assert np.allclose(bounds_for_space(env.observation_space), get_bounds(env_id))


def test_finite_spaces_use_their_own_bounds():
    space = gym.spaces.Box(low=np.array([-1.0, -5.0]), high=np.array([2.0, 3.0]), dtype=np.float32)
    assert bounds_for_space(space).tolist() == [2.0, 5.0]


def test_unbounded_dimension_without_registration_is_a_clear_error():
    space = gym.spaces.Box(low=np.array([-1.0, -np.inf]), high=np.array([1.0, np.inf]), dtype=np.float32)
    with pytest.raises(ValueError, match=r"dimension\(s\) \[1\].*obs_bound"):
        bounds_for_space(space)
    assert bounds_for_space(space, [1.0, 4.0]).tolist() == [1.0, 4.0]
    with pytest.raises(KeyError, match="bounds="):
        get_bounds("Unknown-v0")


def test_register_and_validate_bounds():
    register_bounds("Toy-v0", BoundSpec(low=(-1.0,), high=(1.0,), unbounded={}, note="toy"))
    assert "Toy-v0" in registered_envs()
    with pytest.raises(ValueError):
        register_bounds("Bad-v0", BoundSpec(low=(-np.inf,), high=(np.inf,), unbounded={}, note="none"))
    with pytest.raises(ValueError):
        get_bounds("CartPole-v1", bounds=[1.0, 0.0, 1.0, 1.0])


def test_env_makers_are_monitored_and_seeded():
    env = make_env("CartPole-v1", seed=3)
    env.step(env.action_space.sample())
    assert env.__class__.__name__ == "Monitor"
    venv = make_vec("CartPole-v1", n_envs=2, seed=3)
    assert venv.num_envs == 2
    first = venv.reset()
    venv2 = make_vec("CartPole-v1", n_envs=2, seed=3)
    assert np.array_equal(first, venv2.reset())
