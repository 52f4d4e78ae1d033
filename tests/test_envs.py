import warnings

import gymnasium as gym
import numpy as np
import pytest

from envs import (
    BoundSpec,
    InputActivityCheck,
    bounds_for_space,
    choose_bounds,
    get_bounds,
    make_env,
    make_vec,
    register_bounds,
    registered_envs,
    registered_id,
)


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


def test_the_choice_of_bounds_says_why():
    cartpole = gym.make("CartPole-v1").observation_space
    named = choose_bounds(cartpole, "CartPole-v1")
    assert named.lookalike is None and "registered bounds of CartPole-v1" in named.reason
    lookalike = choose_bounds(cartpole)  # the same space, no id: CartPole's bounds, marked as a look-alike
    assert lookalike.lookalike in ("CartPole-v0", "CartPole-v1") and "obs_bound='CartPole-v" in lookalike.reason
    np.testing.assert_array_equal(lookalike.bound, named.bound)
    assert choose_bounds(cartpole, [1.0, 2.0, 3.0, 4.0]).reason == "obs_bound, as given"
    huge = gym.spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float32)
    assert "finite bounds" in choose_bounds(huge).reason


def test_registered_id_of_envs_and_vec_envs():
    assert registered_id(make_vec("CartPole-v1", n_envs=1, seed=0)) == "CartPole-v1"
    assert registered_id(gym.make("CartPole-v1")) == "CartPole-v1"
    assert registered_id(gym.make("Pendulum-v1")) is None  # no registered bounds
    assert registered_id(None) is None


def _observations(env_id, n, seed=0):
    env, obs = gym.make(env_id), []
    env.action_space.seed(seed)
    o, _ = env.reset(seed=seed)
    while len(obs) < n:
        obs.append(o)
        o, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            o, _ = env.reset()
    return np.array(obs)


def test_input_activity_check_warns_when_the_encoder_is_almost_silent():
    obs = _observations("CartPole-v1", 300)
    huge = choose_bounds(gym.spaces.Box(-1e6, 1e6, shape=(4,), dtype=np.float32))
    check = InputActivityCheck(huge, ticks=10)
    check.see(obs[:50])
    assert not check.done
    with pytest.warns(UserWarning, match=r"almost silent.*finite bounds.*obs_bound"):
        check.see(obs[50:])
    assert check.done
    check.see(obs)  # once only
    fine = InputActivityCheck(choose_bounds(gym.make("CartPole-v1").observation_space, "CartPole-v1"), ticks=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fine.see(obs)
    assert fine.done
    repeated = InputActivityCheck(huge, ticks=10)
    repeated.see(np.repeat(obs[:1], 500, axis=0))  # one state repeated: not yet 100 distinct observations
    assert not repeated.done


class _HugeBox(gym.Env):
    """CartPole behind a Box(-1e6, 1e6) space: finite, and far too wide for the encoder."""

    observation_space = gym.spaces.Box(-1e6, 1e6, shape=(4,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.env = gym.make("CartPole-v1")

    def reset(self, seed=None, options=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        return self.env.step(action)


TINY = dict(net_arch=[8], ticks=4)


def test_policies_warn_about_silent_encoders_and_lookalike_bounds(tmp_path):
    from stable_baselines3 import DQN

    from spiking_dqn import SpikingDQN, SpikingDQNPolicy

    obs = _observations("CartPole-v1", 120)
    model = SpikingDQN(SpikingDQNPolicy, _HugeBox(), policy_kwargs=TINY, seed=0)
    with pytest.warns(UserWarning, match="almost silent"):
        model.predict(obs)
    named = SpikingDQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=TINY, seed=0)
    assert "obs_bound='CartPole-v1'" in named.policy.q_net.bound_choice.reason  # SpikingDQN names its env
    assert "obs_bound" not in named.policy_kwargs  # ... without changing what is saved
    plain = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=TINY, seed=0)
    np.testing.assert_array_equal(plain.policy.q_net.bound_choice.bound, named.policy.q_net.bound_choice.bound)
    with pytest.warns(UserWarning, match="observation space equals CartPole"):
        plain.predict(obs[0])
    plain.save(tmp_path / "model.zip")
    loaded = DQN.load(tmp_path / "model.zip")
    assert loaded.policy.q_net.bound_choice.reason == "the saved model's encoder bounds"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.predict(obs)
