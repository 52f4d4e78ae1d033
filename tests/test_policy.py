import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env
from spiking_dqn import SpikeActivityLogger, SpikingDQNPolicy
from spiking_dqn.config import SpikingConfig
from spiking_dqn.network import SpikingQNetwork

TINY = dict(net_arch=[16], ticks=6, threshold=0.5)


def make_tiny_model(env_id: str = "CartPole-v1", **kwargs) -> DQN:
    return DQN(SpikingDQNPolicy, env_id, policy_kwargs=TINY, learning_starts=50, train_freq=4, seed=0, **kwargs)


def test_policy_builds_a_spiking_q_network():
    model = make_tiny_model()
    assert isinstance(model.policy.q_net.q_net, SpikingQNetwork)
    assert model.policy.q_net.q_net.ticks == 6
    # CartPole's unbounded velocities got their registered bounds
    assert np.allclose(model.policy.q_net.q_net.encoder.bound.numpy(), [2.4, 1.5, 0.2095, 2.0])


def test_short_learn_changes_the_weights_and_logs_activity(tmp_path):
    model = make_tiny_model(tensorboard_log=str(tmp_path))
    before = [p.detach().clone() for p in model.policy.q_net.parameters()]
    logger = SpikeActivityLogger(log_freq=100, n_samples=64)
    model.learn(600, callback=logger)
    after = list(model.policy.q_net.parameters())
    assert any(not th.equal(a, b) for a, b in zip(before, after))
    last = logger.last
    assert {"input_rate", "hidden1_rate", "hidden1_silent_frac", "hidden1_saturated_frac"} <= set(last)
    # The hidden layer (16 neurons, 6 ticks) fires, and the figures agree with each other:
    # fractions of 16 neurons, and spikes per inference = rate x ticks x neurons.
    assert 0.0 < last["hidden1_rate"] <= 1.0 and last["hidden1_silent_frac"] < 1.0
    for key in ("hidden1_silent_frac", "hidden1_saturated_frac"):
        assert last[key] * 16 == pytest.approx(round(last[key] * 16)), key
    assert last["spikes_per_inference"] == pytest.approx(last["hidden1_rate"] * 6 * 16, rel=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(Path(tmp_path).rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "spikes/hidden1_rate" in acc.Tags()["scalars"]


def test_evaluate_policy_works():
    model = make_tiny_model()
    rewards, lengths = evaluate_policy(model, make_env("CartPole-v1", seed=5), n_eval_episodes=2,
                                       return_episode_rewards=True)
    # The same episodes as a plain loop of greedy actions (argmax of the Q-values) on the same seeded env.
    env = make_env("CartPole-v1", seed=5)
    expected = []
    for _ in range(2):
        obs, _ = env.reset()
        done, steps = False, 0
        while not done:
            with th.no_grad():
                action = int(model.policy.q_net(th.as_tensor(obs)[None]).argmax(1))
            obs, _, terminated, truncated, _ = env.step(action)
            steps, done = steps + 1, terminated or truncated
        expected.append(steps)
    assert lengths == expected and rewards == [float(n) for n in expected]  # CartPole: +1 per step


@pytest.mark.slow  # trains 300 steps and starts a fresh interpreter (torch, SB3): several seconds
def test_save_and_load_in_a_fresh_process_gives_identical_q_values(tmp_path):
    model = make_tiny_model()
    model.learn(300)
    path = tmp_path / "model.zip"
    model.save(path)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(20, 4)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    with th.no_grad():
        expected = model.policy.q_net(th.as_tensor(obs)).numpy()
    script = (
        "import sys, numpy as np, torch as th\n"
        "from stable_baselines3 import DQN\n"
        "m = DQN.load(sys.argv[1], device='cpu')\n"
        "obs = np.load(sys.argv[2])\n"
        "with th.no_grad():\n"
        "    np.save(sys.argv[3], m.policy.q_net(th.as_tensor(obs)).numpy())\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "obs.npy"), str(tmp_path / "q.npy")],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert np.array_equal(np.load(tmp_path / "q.npy"), expected)


def test_non_discrete_action_space_is_rejected():
    with pytest.raises(Exception, match="(?i)discrete|not supported"):
        DQN(SpikingDQNPolicy, "Pendulum-v1", policy_kwargs=TINY)


def test_unbounded_unregistered_space_says_how_to_supply_bounds():
    class Unbounded(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            return np.zeros(3, np.float32), {}

        def step(self, action):
            return np.zeros(3, np.float32), 0.0, True, False, {}

    with pytest.raises(ValueError, match="obs_bound"):
        DQN(SpikingDQNPolicy, Unbounded(), policy_kwargs=TINY)
    model = DQN(SpikingDQNPolicy, Unbounded(), policy_kwargs=dict(TINY, obs_bound=[1.0, 2.0, 3.0]))
    assert model.policy.q_net.q_net.encoder.bound.tolist() == [1.0, 2.0, 3.0]


def test_nan_observation_is_a_value_error():
    model = make_tiny_model()
    obs = np.array([0.0, np.nan, 0.0, 0.0], dtype=np.float32)
    with pytest.raises(ValueError, match=r"dimension\(s\) \[1\]"):
        model.predict(obs)


@pytest.mark.parametrize("bad", [dict(ticks=0), dict(beta=2.0), dict(threshold=-1.0)])
def test_bad_policy_kwargs_fail_at_construction(bad):
    with pytest.raises(ValueError):
        DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(TINY, **bad))


def test_saved_model_keeps_its_encoder_bounds(tmp_path):
    """The bounds resolved at training time travel with the model, whatever the registry says later."""
    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(TINY, obs_bound=[1.0, 2.0, 0.5, 3.0]))
    model.save(tmp_path / "model.zip")
    loaded = DQN.load(tmp_path / "model.zip", custom_objects={"policy_kwargs": dict(TINY)})  # no obs_bound now
    assert loaded.policy.q_net.q_net.encoder.bound.tolist() == [1.0, 2.0, 0.5, 3.0]
    assert loaded.policy.q_net_target.q_net.encoder.bound.tolist() == [1.0, 2.0, 0.5, 3.0]


def test_models_saved_without_bounds_still_load():
    from agents.common import trained_model_path

    # The agent as trained was written before bounds (and QAT grids) were saved.
    model = DQN.load(trained_model_path("CartPole-v0").parent / "model_trained.zip", device="cpu")
    assert np.allclose(model.policy.q_net.q_net.encoder.bound.numpy(), [2.4, 1.5, 0.2095, 2.0])


SHIPPED_MODELS = sorted((Path(__file__).resolve().parents[1] / "agents" / "trained").glob("*/model*.zip"))


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_models_load_with_the_options_they_were_saved_with(path):
    import json
    import zipfile

    saved = json.loads(zipfile.ZipFile(path).read("data"))["policy_kwargs"]  # plain values, as rl-zoo writes them
    model = DQN.load(path, device="cpu")
    net = model.policy.q_net.q_net
    expected = SpikingConfig(**{k: v for k, v in saved.items() if k != "obs_bound"})
    assert net.config == expected == model.policy.q_net_target.q_net.config
    assert net.net_arch == saved["net_arch"] and net.ticks == saved["ticks"]
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, size=(8, *model.observation_space.shape)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    with th.no_grad():
        greedy = model.policy.q_net(th.as_tensor(obs)).argmax(1).numpy()
    assert np.array_equal(actions, greedy)


def test_policy_kwargs_take_every_spiking_option_as_a_plain_value(tmp_path):
    options = dict(
        net_arch=[12, 6],
        ticks=9,
        beta=0.7,
        threshold=0.4,
        surrogate="fast_sigmoid",
        reset="zero",
        synaptic_delay=0,
        encoding="poisson",
        encoding_seed=3,
    )
    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=options)
    config = SpikingConfig(**options)
    assert model.policy.spiking_config == config
    assert model.policy.q_net.q_net.config == model.policy.q_net_target.q_net.config == config
    assert model.policy.q_net.q_net.encoder.mode == "poisson" and model.policy.q_net.q_net.encoder.seed == 3
    # The policy alone saves and rebuilds from its constructor parameters (plain values).
    params = model.policy._get_constructor_parameters()
    assert {k: params[k] for k in options} == options
    model.policy.save(tmp_path / "policy.pth")
    loaded = SpikingDQNPolicy.load(tmp_path / "policy.pth", device="cpu")
    assert loaded.spiking_config == config
    spikes = model.policy.q_net.q_net.encoder(th.rand(4, 4) * 2 - 1)  # Poisson: encode once, feed both
    with th.no_grad():
        assert th.equal(loaded.q_net.q_net.forward_spikes(spikes), model.policy.q_net.q_net.forward_spikes(spikes))


def test_policy_defaults_are_the_config_defaults():
    model = DQN(SpikingDQNPolicy, "CartPole-v1")
    assert model.policy.spiking_config == SpikingConfig()
    assert model.policy.net_arch == list(SpikingConfig().net_arch) == model.policy.q_net.net_arch


def test_unknown_policy_kwarg_is_a_type_error():
    with pytest.raises(TypeError, match="tiks"):
        DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(TINY, tiks=5))


def test_training_mode_reaches_every_module_even_when_one_was_switched_alone():
    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[8], ticks=4), device="cpu")
    policy = model.policy
    policy.set_training_mode(False)
    assert not any(m.training for m in policy.q_net.modules())
    policy.set_training_mode(True)
    assert all(m.training for m in policy.q_net.modules())
    # A module switched behind the policy's back: the next call still sets every module.
    policy.q_net.q_net.lif[0].eval()
    policy.set_training_mode(True)
    assert all(m.training for m in policy.q_net.modules())
    policy.q_net.q_net.encoder.train()
    policy.set_training_mode(False)
    assert not any(m.training for m in policy.q_net.modules()) and not policy.training
    assert policy.device == th.device("cpu")
