"""The energy knobs of the float network and the chip: threshold scale, ASPEN threshold noise, activity penalty."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import HardwarePolicy, SpikingDQNPolicy
from agents.common import trained_model_path
from spiking_dqn.hardware import BackendResult, ChipProgram, EmulatorBackend
from spiking_dqn.config import SpikingConfig
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.grid import Grid
from spiking_dqn.quantization import quantize_network
from spiking_dqn.quantization.snap import snap_to_grid
from spiking_dqn.thresholds import ThresholdNoise, check_threshold_scale

from test_emulator import random_net, random_obs


def snapped_net(delay: int = 1, reset: str = "subtract", seed: int = 0, **options) -> SpikingQNetwork:
    """A random network whose weights and thresholds sit on a power-of-two grid, so that chip and float agree."""
    th.manual_seed(seed)
    net = SpikingQNetwork(
        obs_bound=[1.0, 1.0, 1.0, 1.0], n_actions=3, net_arch=[32, 16], ticks=10, threshold=0.5,
        reset=reset, synaptic_delay=delay, **options,
    )
    snap_to_grid(net, Grid((16.0, 16.0, 16.0), centered_readout=False))
    return net


def float_counts(net: SpikingQNetwork, obs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    with th.no_grad():
        q, counts = net(th.as_tensor(obs), return_activity=True)
    return q.numpy(), [c.numpy().astype(np.int64) for c in counts]


# ---------------------------------------------------------------------- the threshold scale


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("scale", [0.6, 1.0, 1.5, 2.4])
def test_threshold_scale_acts_alike_on_the_float_model_and_the_emulator(reset, scale):
    net = snapped_net(reset=reset)
    program, _ = quantize_network(net, None)
    obs = random_obs(128)
    net.threshold_scale = scale
    chip = HardwarePolicy(program, threshold_scale=scale)
    q, counts = float_counts(net, obs)
    result = chip.run(obs)
    assert sum(int(c.sum()) for c in result.spike_counts[1:-1]) > 0
    np.testing.assert_array_equal(result.actions, q.argmax(1))
    for emulated, float_count in zip(result.spike_counts, counts):
        np.testing.assert_array_equal(emulated, float_count)
    # The program (and so its file) keeps the nominal thresholds.
    assert chip.program == program
    np.testing.assert_array_equal(chip.running_program.thresholds[-1], program.thresholds[-1])


def test_a_higher_threshold_scale_means_fewer_spikes_and_events():
    net = random_net(1, "subtract")
    program, _ = quantize_network(net, 20.0)
    chip = HardwarePolicy(program)
    obs = random_obs(128)
    events = []
    for scale in (0.6, 1.0, 2.0):
        chip.threshold_scale = scale
        events.append(int(chip.run(obs).synaptic_events.sum()))
    assert events[0] > events[1] > events[2]


def test_policy_threshold_scale_sets_both_networks():
    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[16], ticks=6), seed=0)
    model.policy.threshold_scale = 1.5
    assert model.policy.q_net.q_net.threshold_scale == 1.5
    assert model.policy.q_net_target.q_net.threshold_scale == 1.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "x", True])
def test_bad_threshold_scale_is_refused(bad):
    net = random_net(1, "subtract")
    with pytest.raises(ValueError, match="threshold_scale"):
        net.threshold_scale = bad
    program, _ = quantize_network(net, 20.0)
    with pytest.raises(ValueError, match="threshold_scale"):
        HardwarePolicy(program, threshold_scale=bad)
    with pytest.raises(ValueError, match="threshold_scale"):
        check_threshold_scale(bad)


# ---------------------------------------------------------------------- ASPEN threshold noise


def test_threshold_noise_changes_training_thresholds_only():
    noisy = snapped_net(threshold_noise=(1.0, 2.0), threshold_noise_seed=7)
    plain = snapped_net()
    plain.load_state_dict(noisy.state_dict(), strict=False)
    obs = th.as_tensor(random_obs(64))

    # Acting (eval mode, no gradients) and the target network (no gradients): nominal thresholds.
    noisy.eval()
    np.testing.assert_array_equal(float_counts(noisy, obs.numpy())[0], float_counts(plain, obs.numpy())[0])
    noisy.train()
    with th.no_grad():
        np.testing.assert_array_equal(noisy(obs).numpy(), plain(obs).numpy())
    assert noisy.last_threshold_factor == 1.0

    # A training forward draws a factor and runs with thresholds times that factor.
    factors = []
    for _ in range(5):
        q = noisy(obs)
        factor = noisy.last_threshold_factor
        factors.append(factor)
        assert 1.0 <= factor <= 2.0
        plain.threshold_scale = factor
        with th.no_grad():
            np.testing.assert_array_equal(q.detach().numpy(), plain(obs).numpy())
    assert len(set(factors)) == 5

    # Seeded: the same seed draws the same factors; the generator's state is saved with the weights.
    again = snapped_net(threshold_noise=(1.0, 2.0), threshold_noise_seed=7)
    drawn = []
    for _ in range(5):
        again(obs)
        drawn.append(again.last_threshold_factor)
    assert drawn == factors
    restored = snapped_net(threshold_noise=(1.0, 2.0), threshold_noise_seed=99)
    restored.load_state_dict(again.state_dict())
    again(obs)
    restored(obs)
    assert restored.last_threshold_factor == again.last_threshold_factor


def test_threshold_noise_levels_draw_only_those_levels():
    net = snapped_net(threshold_noise={"levels": [1.0, 1.5, 2.0]}, threshold_noise_seed=0)
    obs = th.as_tensor(random_obs(8))
    seen = set()
    for _ in range(30):
        net(obs)
        seen.add(net.last_threshold_factor)
    assert seen == {1.0, 1.5, 2.0}


def test_threshold_noise_gradient_uses_the_drawn_threshold():
    """The backward's surrogate sees the threshold the forward ran with."""
    noisy = snapped_net(threshold_noise=(1.5, 2.5), threshold_noise_seed=3)
    plain = copy.deepcopy(noisy)
    plain.config = SpikingConfig(**{**noisy.config.to_kwargs(), "threshold_noise": None})
    plain._noise_generator = None
    obs = th.as_tensor(random_obs(32))
    noisy(obs).sum().backward()
    plain.threshold_scale = noisy.last_threshold_factor
    plain(obs).sum().backward()
    for a, b in zip(noisy.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_threshold_noise_in_sb3_training_is_saved_with_the_model(tmp_path):
    kwargs = dict(net_arch=[16], ticks=6, threshold_noise=(1.0, 1.5))
    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=kwargs, learning_starts=50, train_freq=4,
                batch_size=16, seed=0)
    model.learn(200)
    net = model.policy.q_net.q_net
    assert 1.0 < net.last_threshold_factor <= 1.5
    assert model.policy.q_net_target.q_net.last_threshold_factor == 1.0  # the target runs nominal
    model.save(tmp_path / "m.zip")
    loaded = DQN.load(tmp_path / "m.zip")
    assert loaded.policy.spiking_config.threshold_noise == ThresholdNoise(1.0, 1.5)
    # Reproducible: the same seed trains the same weights.
    twin = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=kwargs, learning_starts=50, train_freq=4,
               batch_size=16, seed=0)
    twin.learn(200)
    for a, b in zip(model.policy.parameters(), twin.policy.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize(
    "bad", [(1.5, 1.0), (0.0, 1.0), (-1.0, 1.0), {"levels": []}, {"levels": [1.0, 0.0]}, (1.0,), "a,b",
            {"low": 1.0}, {"mean": 1.0}]
)
def test_bad_threshold_noise_is_refused(bad):
    with pytest.raises(ValueError, match="threshold_noise"):
        SpikingConfig(threshold_noise=bad)


# ---------------------------------------------------------------------- activity penalty


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_activity_penalty_gradient_is_that_of_loss_plus_penalty(reset):
    coef = 3e-3
    penalized = snapped_net(reset=reset, activity_penalty=coef)
    plain = copy.deepcopy(penalized)
    plain.config = SpikingConfig(**{**penalized.config.to_kwargs(), "activity_penalty": 0.0})
    obs = th.as_tensor(random_obs(64))
    actions = th.as_tensor(np.random.default_rng(0).integers(0, 3, 64))
    target = th.randn(64)

    def loss_of(q):  # SB3's DQN loss
        return th.nn.functional.smooth_l1_loss(q.gather(1, actions[:, None]).squeeze(1), target)

    loss_of(penalized(obs)).backward()
    # Autograd's gradient of loss + c * mean synaptic events, written out.
    spikes = plain.encoder(obs)
    q, trains = plain.forward_spikes(spikes, return_activity=True)
    events = plain.synaptic_events(spikes, trains)
    (loss_of(q) + coef * events.mean()).backward()
    assert float(penalized.last_activity_penalty) == pytest.approx(float(coef * events.detach().mean()), rel=1e-6)
    changed = False
    for a, b in zip(penalized.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6)
    # ... and the penalty did change the gradient.
    for net in (plain,):
        net.zero_grad()
    loss_of(plain(obs)).backward()
    for a, b in zip(penalized.parameters(), plain.parameters()):
        changed |= not np.allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-6)
    assert changed


def test_float_synaptic_events_equal_the_emulators():
    net = snapped_net()
    program, _ = quantize_network(net, None)
    obs = random_obs(64)
    with th.no_grad():
        spikes = net.encoder(th.as_tensor(obs))
        _, trains = net.forward_spikes(spikes, return_activity=True)
        events = net.synaptic_events(spikes, trains).numpy()
    np.testing.assert_array_equal(events.astype(np.int64), EmulatorBackend().run(program, obs).synaptic_events)


def test_activity_penalty_is_off_when_acting():
    net = snapped_net(activity_penalty=1.0)
    obs = th.as_tensor(random_obs(8))
    net.eval()
    with th.no_grad():
        net(obs)
    assert net.last_activity_penalty is None


def test_activity_penalty_lowers_activity_in_sb3_training():
    """The same seed and budget, with and without the penalty: the penalised agent's hidden layers cause fewer events.

    The input population's events are set by the observations (no gradient), so the
    comparison is on the events of the hidden layers' spikes.
    """
    events = {}
    for coef in (0.0, 0.02):
        model = DQN(SpikingDQNPolicy, "CartPole-v1", learning_starts=100, train_freq=4, batch_size=32,
                    learning_rate=1e-3, policy_kwargs=dict(net_arch=[32, 32], ticks=8, activity_penalty=coef), seed=1)
        model.learn(1500)
        net = model.policy.q_net.q_net
        obs = th.as_tensor(random_obs(256))
        with th.no_grad():
            spikes = net.encoder(obs)
            _, trains = net.forward_spikes(spikes, return_activity=True)
            total = net.synaptic_events(spikes, trains)
            inputs_only = net.synaptic_events(spikes, [th.zeros_like(t) for t in trains])
            events[coef] = float((total - inputs_only).mean())
    assert events[0.02] < 0.5 * events[0.0], events


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), "0.1", True])
def test_bad_activity_penalty_is_refused(bad):
    with pytest.raises(ValueError, match="activity_penalty"):
        SpikingConfig(activity_penalty=bad)


# ---------------------------------------------------------------------- adaptive thresholds


class ScriptedBackend:
    """Returns scripted hidden spike counts and records the thresholds each run was given."""

    name = "scripted"

    def __init__(self, hidden_spikes: list[list[int]]) -> None:
        self.script = list(hidden_spikes)
        self.seen: list[list[np.ndarray]] = []

    def run(self, program, obs):
        self.seen.append([t.copy() for t in program.thresholds])
        counts = self.script.pop(0)
        n = len(obs)
        spike_counts = [np.zeros((n, program.layer_sizes[0]), np.int64)]
        for c, size in zip(counts, program.layer_sizes[1:-1]):
            row = np.zeros((n, size), np.int64)
            row[:, 0] = c
            spike_counts.append(row)
        spike_counts.append(np.zeros((n, program.n_actions), np.int64))
        return BackendResult(
            voltages=np.zeros((n, program.n_actions), np.float32), actions=np.zeros(n, np.int64),
            spike_counts=spike_counts, synaptic_events=np.zeros(n, np.int64),
            output_saturated=np.zeros(n, bool), ticks=program.ticks, backend=self.name,
        )


def test_adaptive_rule_on_a_scripted_activity_sequence():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)  # hidden 32 and 16 neurons, 10 ticks
    sizes, ticks = program.layer_sizes[1:-1], program.ticks
    script = [[32, 16], [96, 0], [0, 8], [64, 16], [32, 16]]  # hidden spikes per layer per inference
    backend = ScriptedBackend(script)
    rule = dict(target_rate=0.2, gain=2.0, window=2)
    chip = HardwarePolicy(program, backend=backend, adaptive_thresholds=rule, threshold_scale=1.5)
    obs = random_obs(1)[0]
    chip.predict(obs, episode_start=np.array([True]))
    for _ in range(3):
        chip.predict(obs, episode_start=np.array([False]))
    chip.predict(obs, episode_start=np.array([True]))  # a new episode: base thresholds again

    rates = [np.array(c, float) / (np.array(sizes) * ticks) for c in script]
    expected_factors = [
        np.ones(2),  # no history yet
        1 + 2.0 * (0.2 - rates[0]),
        1 + 2.0 * (0.2 - (rates[0] + rates[1]) / 2),
        1 + 2.0 * (0.2 - (rates[1] + rates[2]) / 2),  # window 2: the first inference dropped
        np.ones(2),
    ]
    for seen, factors in zip(backend.seen, expected_factors):
        for k in range(2):
            expected = program.thresholds[k] * np.float32(1.5) * np.float32(max(factors[k], 0.1))
            np.testing.assert_allclose(seen[k], expected, rtol=1e-6)
        np.testing.assert_array_equal(seen[-1], program.thresholds[-1])  # the output is never adapted
    assert not backend.script


def test_adaptive_thresholds_keep_one_state_per_episode():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    backend = ScriptedBackend([[160, 0], [0, 0], [0, 0], [0, 0]])
    chip = HardwarePolicy(program, backend=backend, adaptive_thresholds=dict(target_rate=0.1, gain=1.0))
    chip.run(random_obs(2), episodes=[7, 8])  # episode 7 fires hard (rate 0.5), episode 8 not at all
    chip.run(random_obs(2), episodes=[7, 8])
    rate7 = 160 / (32 * 10)
    np.testing.assert_allclose(backend.seen[2][0], program.thresholds[0] * np.float32(1 + (0.1 - rate7)), rtol=1e-6)
    np.testing.assert_allclose(backend.seen[3][0], program.thresholds[0] * np.float32(1 + 0.1), rtol=1e-6)


def test_adaptive_thresholds_in_the_episode_loop():
    """With gain 0 the adaptive policy plays exactly the program; a target above the agent's rates raises its thresholds."""
    from spiking_dqn.rollouts import backend_reward

    program = ChipProgram.load(trained_model_path("CartPole-v0").parent / "chip_program.npz")
    plain = backend_reward(program, "CartPole-v0", n_episodes=3, seed=0)
    still = backend_reward(
        HardwarePolicy(program, adaptive_thresholds=dict(target_rate=0.05, gain=0.0)), "CartPole-v0", 3, seed=0
    )
    assert still.rewards == plain.rewards
    assert still.cost.synaptic_events == plain.cost.synaptic_events
    low = backend_reward(
        HardwarePolicy(program, adaptive_thresholds=dict(target_rate=0.5, gain=2.0)), "CartPole-v0", 3, seed=0
    )
    assert low.synaptic_events_per_inference < plain.synaptic_events_per_inference


@pytest.mark.parametrize(
    "bad", [dict(target_rate=0.0, gain=1.0), dict(target_rate=1.5, gain=1.0), dict(target_rate=0.1, gain=-1.0),
            dict(target_rate=0.1, gain=1.0, window=0), dict(target_rate=0.1), dict(target_rate=0.1, gain=1.0, x=1),
            dict(target_rate=float("nan"), gain=1.0), "fast"]
)
def test_bad_adaptive_thresholds_are_refused(bad):
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    with pytest.raises(ValueError, match="adaptive_thresholds"):
        HardwarePolicy(program, adaptive_thresholds=bad)


# ---------------------------------------------------------------------- the command line


def test_train_takes_the_knobs_and_saves_them_with_the_model(tmp_path):
    from spiking_dqn.cli import main

    out = tmp_path / "cp"
    assert main(["train", "CartPole-v1", "--timesteps", "300", "--qat-steps", "0", "--eval-episodes", "1",
                 "--select-episodes", "1", "--eval-freq", "300", "--no-progress", "--out", str(out),
                 "--threshold-noise", "levels:1.0,1.5", "--activity-penalty", "0.001"]) == 0
    config = DQN.load(out / "model.zip").policy.spiking_config
    assert config.threshold_noise == ThresholdNoise(levels=(1.0, 1.5))
    assert config.activity_penalty == 0.001
    assert "threshold_noise" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "option, value, message",
    [("--threshold-noise", "1.5,1.0", "threshold_noise low must not exceed high"),
     ("--threshold-noise", "levels:", "threshold_noise levels must not be empty"),
     ("--activity-penalty", "-0.1", "activity_penalty must be a non-negative")],
)
def test_train_refuses_bad_knobs_before_training(option, value, message, tmp_path, capsys):
    from spiking_dqn.cli import main

    assert main(["train", "CartPole-v1", option, value, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rl_zoo_trains_with_threshold_noise_from_its_policy_kwargs(tmp_path):
    from test_zoo import CONFIG, _zoo

    _zoo(
        "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v0", "-conf", str(CONFIG), "-n", "300",
        "-f", str(tmp_path), "--seed", "0", "--eval-freq", "-1",
        "-params", "policy_kwargs:dict(net_arch=[16], ticks=6, threshold_noise=(1.0, 1.5), activity_penalty=0.001)",
    )
    model = DQN.load(tmp_path / "dqn" / "CartPole-v0_1" / "CartPole-v0.zip")
    assert model.policy.spiking_config.threshold_noise == ThresholdNoise(1.0, 1.5)
    assert model.policy.spiking_config.activity_penalty == 0.001


# ---------------------------------------------------------------------- hybrid coding


def literal_hybrid_trains(obs: np.ndarray, bound: np.ndarray, ticks: int, alpha: float) -> np.ndarray:
    """Hybrid coding as defined, tick by tick: accumulate r, spike at most once per tick at theta = 1 - alpha r."""
    x = np.clip(obs.astype(np.float64) / bound, -1.0, 1.0)
    rates = np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=1)
    theta = 1.0 - alpha * rates
    acc = np.zeros_like(rates)
    out = np.zeros((ticks, *rates.shape), np.float32)
    for t in range(ticks):
        acc += rates
        fire = acc >= theta - 1e-9
        out[t] = fire
        acc = np.where(fire, acc - theta, acc)
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.9])
def test_hybrid_trains_are_the_definition_and_identical_in_float_and_emulator(alpha):
    from spiking_dqn.hardware.backend import encode_observations

    net = snapped_net(encoding="hybrid", encoding_alpha=alpha)
    program, _ = quantize_network(net, None)
    assert program.encoding == "hybrid" and program.encoding_alpha == alpha
    obs = random_obs(256)
    with th.no_grad():
        float_trains = net.encoder(th.as_tensor(obs)).numpy()
    chip_trains = encode_observations(program, obs)
    np.testing.assert_array_equal(float_trains, chip_trains)
    np.testing.assert_array_equal(chip_trains, literal_hybrid_trains(obs, np.ones(4), 10, alpha))
    # The accelerator path (torch ops), run here on the CPU.
    rates = net.encoder.rates(th.as_tensor(obs))
    from spiking_dqn.encoding import deterministic_spikes_torch

    hybrid = th.clamp(rates / (1.0 - alpha * rates), max=1.0)
    np.testing.assert_array_equal(deterministic_spikes_torch(hybrid, 10).numpy(), chip_trains)
    # And the whole network: same spikes, same actions.
    q, counts = float_counts(net, obs)
    result = EmulatorBackend().run(program, obs)
    np.testing.assert_array_equal(result.actions, q.argmax(1))
    for emulated, float_count in zip(result.spike_counts, counts):
        np.testing.assert_array_equal(emulated, float_count)


def test_hybrid_fires_large_inputs_earlier():
    obs = np.array([[0.9, 0.2, 0.05, 0.0]], np.float32)
    plain = literal_hybrid_trains(obs, np.ones(4), 16, 0.0)
    hybrid = literal_hybrid_trains(obs, np.ones(4), 16, 0.5)
    first = lambda trains, i: int(np.argmax(trains[:, 0, i])) if trains[:, 0, i].any() else None  # noqa: E731
    assert first(hybrid, 0) <= first(plain, 0) and hybrid[:, 0, 0].sum() > plain[:, 0, 0].sum()
    assert first(hybrid, 2) is None or first(hybrid, 2) > first(hybrid, 1)
    assert hybrid[:, 0, 3].sum() == 0


def test_hybrid_program_file_round_trip_and_old_files(tmp_path):
    from spiking_dqn.hardware import ChipProgram

    program, _ = quantize_network(snapped_net(encoding="hybrid", encoding_alpha=0.25), None)
    program.save(tmp_path / "p.npz")
    assert ChipProgram.load(tmp_path / "p.npz") == program
    shipped = ChipProgram.load(trained_model_path("CartPole-v0").parent / "chip_program.npz")
    assert shipped.encoding_alpha == 0.0  # files without the field load as the plain code


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True])
def test_bad_hybrid_alpha_is_refused(bad):
    with pytest.raises(ValueError, match="encoding_alpha"):
        SpikingConfig(encoding="hybrid", encoding_alpha=bad)
    program, _ = quantize_network(snapped_net(), None)
    import dataclasses

    with pytest.raises(ValueError, match="encoding_alpha"):
        dataclasses.replace(program, encoding="hybrid", encoding_alpha=bad)


def test_alpha_without_hybrid_is_refused_on_a_program():
    import dataclasses

    program, _ = quantize_network(snapped_net(), None)
    with pytest.raises(ValueError, match="encoding_alpha is hybrid coding's"):
        dataclasses.replace(program, encoding_alpha=0.5)


def test_compare_sweeps_float_and_chip_alike(tmp_path):
    """--threshold-scale applies to both policies: at 1.2 the shipped agent's chip and float agree as at 1.0."""
    from spiking_dqn.cli import main
    from spiking_dqn.rollouts import float_reward

    model_path = trained_model_path("CartPole-v0")
    out = tmp_path / "cmp"
    assert main(["compare", str(model_path), "--episodes", "3", "--threshold-scale", "1.2", "--no-progress",
                 "--out", str(out)]) == 0
    report = __import__("json").loads((out / "report.json").read_text())
    text = (out / "report.md").read_text()
    assert "hidden thresholds x 1.2 at run time" in text
    model = DQN.load(model_path)
    model.policy.threshold_scale = 1.2
    scaled_float = float_reward(model, "CartPole-v0", 3, seed=0).mean_reward
    program = ChipProgram.load(model_path.parent / "chip_program.npz")
    from spiking_dqn.rollouts import backend_reward

    scaled_chip = backend_reward(HardwarePolicy(program, threshold_scale=1.2), "CartPole-v0", 3, seed=0).mean_reward
    assert scaled_float == scaled_chip < 200.0  # the shipped agent is sensitive to its thresholds
    assert report["reward"]["float"]["mean"]["value"] == scaled_float
    assert report["reward"]["chip"]["mean"]["value"] == scaled_chip
    assert model.policy.threshold_scale == 1.2 and DQN.load(model_path).policy.threshold_scale == 1.0


# ---------------------------------------------------------------------- the shipped agents' energy targets


def test_shipped_cartpole_agent_runs_at_most_10_ticks_at_full_reward():
    from spiking_dqn.rollouts import backend_reward

    program = ChipProgram.load(trained_model_path("CartPole-v0").parent / "chip_program.npz")
    assert program.ticks <= 10
    assert backend_reward(program, "CartPole-v0", 20, seed=20_000).mean_reward == 200.0


def test_shipped_low_energy_cartpole_agent_meets_its_target():
    """At most half the shipped agent's synaptic events at >= 98% of its reward, on the same held-out episodes."""
    from spiking_dqn.rollouts import backend_reward

    folder = trained_model_path("CartPole-v0").parent
    shipped = backend_reward(ChipProgram.load(folder / "chip_program.npz"), "CartPole-v0", 20, seed=20_000)
    low = backend_reward(ChipProgram.load(folder / "low_energy" / "chip_program.npz"), "CartPole-v0", 20, seed=20_000)
    assert low.mean_reward >= 0.98 * shipped.mean_reward
    assert low.synaptic_events_per_inference <= 0.5 * shipped.synaptic_events_per_inference
    # Its float twin is the program (snapped after QAT) and was trained with the penalty.
    model = DQN.load(folder / "low_energy" / "model.zip")
    assert model.policy.spiking_config.activity_penalty == 1e-4
    assert HardwarePolicy.from_model(model).program == ChipProgram.load(folder / "low_energy" / "chip_program.npz")


def test_shipped_low_energy_acrobot_agent_meets_its_target():
    """At most 2/3 of the shipped agent's synaptic events at >= 95% of its normalised reward (the study's episodes)."""
    from spiking_dqn.rollouts import backend_reward, float_reward

    folder = trained_model_path("Acrobot-v1").parent
    # The study's 100 held-out episodes: the emulator is deterministic, so this is the study's point.
    reference = float_reward(DQN.load(folder / "model.zip"), "Acrobot-v1", 100, seed=20_000).mean_reward
    shipped = backend_reward(ChipProgram.load(folder / "chip_program.npz"), "Acrobot-v1", 100, seed=20_000)
    low = backend_reward(ChipProgram.load(folder / "low_energy" / "chip_program.npz"), "Acrobot-v1", 100, seed=20_000)
    assert (low.mean_reward + 500) / (reference + 500) >= 0.95
    assert low.synaptic_events_per_inference <= 2 / 3 * shipped.synaptic_events_per_inference
    # Fewer ticks bought it: 12 instead of 20, so time-proportional energy and latency fall too.
    model = DQN.load(folder / "low_energy" / "model.zip")
    assert model.policy.spiking_config.ticks == 12 == ChipProgram.load(folder / "low_energy" / "chip_program.npz").ticks
    assert HardwarePolicy.from_model(model).program == ChipProgram.load(folder / "low_energy" / "chip_program.npz")
