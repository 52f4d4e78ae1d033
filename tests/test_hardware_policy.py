import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env, make_vec
from spiking_dqn import HardwarePolicy, SpikingDQNPolicy


@pytest.fixture(scope="module")
def model():
    m = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[16], ticks=6, threshold=0.5),
            learning_starts=50, seed=0)
    m.learn(300)
    return m


def test_evaluate_policy_on_single_and_vectorised_envs(model):
    hardware = HardwarePolicy.from_model(model, lam="auto")
    mean_single, _ = evaluate_policy(hardware, make_env("CartPole-v1", seed=1), n_eval_episodes=3)
    mean_vec, _ = evaluate_policy(hardware, make_vec("CartPole-v1", n_envs=3, seed=1), n_eval_episodes=6)
    assert mean_single >= 8 and mean_vec >= 8  # CartPole episodes last at least 8 steps
    assert hardware.stats.inferences > 0 and hardware.stats.per_inference()["synaptic_events"] >= 0


def test_predict_shapes_follow_sb3(model):
    hardware = HardwarePolicy.from_model(model)
    obs = np.zeros(4, dtype=np.float32)
    action, state = hardware.predict(obs)
    assert np.ndim(action) == 0 and state is None
    actions, _ = hardware.predict(np.zeros((5, 4), dtype=np.float32))
    assert actions.shape == (5,)
    # the same greedy action as the emulator's argmax of its voltages
    assert int(action) == int(np.argmax(hardware.q_values(obs)[0]))


def test_bad_observations(model):
    hardware = HardwarePolicy.from_model(model)
    with pytest.raises(ValueError, match="NaN|finite"):
        hardware.predict(np.array([0.0, np.nan, 0.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError):
        hardware.predict(np.zeros((2, 3), dtype=np.float32))


def test_thresholds_can_be_read_and_set(model):
    hardware = HardwarePolicy.from_model(model)
    before = hardware.thresholds
    hardware.set_threshold(0, before[0] * 2)
    assert np.allclose(hardware.thresholds[0], before[0] * 2)
    assert np.array_equal(hardware.thresholds[-1], before[-1])
    with pytest.raises(IndexError):
        hardware.set_threshold(5, 1.0)


def test_save_and_load_round_trip(model, tmp_path):
    hardware = HardwarePolicy.from_model(model)
    hardware.save(tmp_path / "program.npz")
    loaded = HardwarePolicy.load(tmp_path / "program.npz")
    assert loaded.program == hardware.program
    obs = np.random.default_rng(0).uniform(-0.2, 0.2, size=(20, 4)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs)[0], hardware.predict(obs)[0])


def test_from_model_rejects_other_policies():
    with pytest.raises(TypeError, match="SpikingDQNPolicy"):
        HardwarePolicy.from_model(DQN("MlpPolicy", "CartPole-v1"))
