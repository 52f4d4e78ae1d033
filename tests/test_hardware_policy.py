import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env, make_vec
from spiking_dqn import HardwarePolicy


@pytest.fixture
def model(trained_tiny_model):
    """The session's tiny trained model (HardwarePolicy.from_model only reads it)."""
    return trained_tiny_model


def play(policy: HardwarePolicy, env_id: str, n_episodes: int, seed: int) -> tuple[list[float], list[int]]:
    """Episode rewards and lengths of ``policy`` on ``make_env(env_id, seed)``: a plain loop, no SB3."""
    env = make_env(env_id, seed=seed)
    rewards, lengths = [], []
    for _ in range(n_episodes):
        obs, _ = env.reset()
        done, total, steps = False, 0.0, 0
        while not done:
            action, _ = policy.predict(obs)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        rewards.append(total)
        lengths.append(steps)
    return rewards, lengths


def test_evaluate_policy_on_single_and_vectorised_envs(model):
    hardware = HardwarePolicy.from_model(model, lam="auto")
    rewards, lengths = evaluate_policy(hardware, make_env("CartPole-v1", seed=1), n_eval_episodes=3,
                                       return_episode_rewards=True)
    # SB3's loop gives the episodes a plain loop over the same seeded env gives.
    assert (rewards, lengths) == play(HardwarePolicy(hardware.program), "CartPole-v1", 3, seed=1)
    # One inference per step on a single env, and the network's synaptic events are counted.
    assert hardware.stats.inferences == sum(lengths)
    assert hardware.stats.per_inference()["synaptic_events"] > 0
    single = hardware.stats.inferences
    vec_rewards, vec_lengths = evaluate_policy(hardware, make_vec("CartPole-v1", n_envs=3, seed=1),
                                               n_eval_episodes=6, return_episode_rewards=True)
    assert len(vec_rewards) == 6 and vec_rewards == [float(n) for n in vec_lengths]  # CartPole: +1 per step
    # Three observations per step, and every counted episode step is one of them.
    vec_inferences = hardware.stats.inferences - single
    assert vec_inferences % 3 == 0 and vec_inferences >= sum(vec_lengths)


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


def test_a_program_is_refused_beside_another_model(model, tmp_path):
    import copy
    import dataclasses

    import torch as th

    hardware = HardwarePolicy.from_model(model)
    path = hardware.program.save(tmp_path / "program.npz")
    assert HardwarePolicy.load(path, model=model).program == hardware.program  # its own model: taken silently
    other = copy.deepcopy(model.policy.q_net.q_net)
    with th.no_grad():
        other.hidden[0].weight[0, 0] += 1.0
    with pytest.raises(ValueError, match=r"was built from model [0-9a-f]{12}, not from this model \([0-9a-f]{12}\)"):
        HardwarePolicy.load(path, model=other)
    with pytest.raises(ValueError, match="allow_mismatch=True"):
        HardwarePolicy(hardware.program, model=other)
    with pytest.warns(UserWarning, match="was built from model"):
        HardwarePolicy(hardware.program, model=other, allow_mismatch=True)
    with pytest.warns(UserWarning, match="records no model digest"):
        HardwarePolicy(dataclasses.replace(hardware.program, model_digest=None), model=model)


def test_a_models_digest_survives_save_and_load_and_follows_its_weights(model, tmp_path):
    import copy

    import torch as th

    from spiking_dqn.quantization import model_digest

    digest = model_digest(model)
    assert HardwarePolicy.from_model(model).program.model_digest == digest
    assert model_digest(model.policy) == model_digest(model.policy.q_net.q_net) == digest
    model.save(tmp_path / "m.zip")
    assert model_digest(DQN.load(tmp_path / "m.zip", device="cpu")) == digest
    other = copy.deepcopy(model.policy.q_net.q_net)
    other.threshold_scale = 1.5  # a runtime setting, not the model
    assert model_digest(other) == digest
    with th.no_grad():
        other.readout.bias[0] += 1e-3
    assert model_digest(other) != digest


def test_from_model_rejects_other_policies():
    with pytest.raises(TypeError, match="SpikingDQNPolicy"):
        HardwarePolicy.from_model(DQN("MlpPolicy", "CartPole-v1"))
