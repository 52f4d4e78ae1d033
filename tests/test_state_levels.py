"""Chip programs with membrane state levels (SQUAT) and per-tick gains (TaWQ): file, emulator, refusals, level schemes."""

import dataclasses
import json

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import HardwarePolicy
from spiking_dqn.export import to_nir
from spiking_dqn.nir_format import NIRError
from spiking_dqn.hardware.brian2 import Brian2Backend
from spiking_dqn.hardware.emulator import EmulatorBackend
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_file import ChipProgramError
from spiking_dqn.hardware.spinnaker2 import SpiNNaker2Backend
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import quantize_network, state_levels_for, threshold_centered_levels, uniform_levels
from spiking_dqn.rollouts import backend_reward
from tests.test_chip_program import make_program, saved_arrays, write_npz

SHIPPED = "agents/trained/CartPole-v0"


def random_levels(rng, n, low, high):
    return np.sort(rng.choice(np.linspace(low, high, 4 * n), size=n, replace=False)).astype(np.float32)


def reference_run(program: ChipProgram, spikes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The chip rule tick by tick in plain numpy: update (gained input), compare, reset, then the nearest level."""
    ticks, batch = spikes.shape[:2]
    vs = [np.zeros((batch, w.shape[0]), np.float32) for w in program.weights]
    trains = [spikes.astype(np.float32)] + [np.zeros((ticks, batch, w.shape[0]), np.float32) for w in program.weights]
    levels = program.state_levels or [None] * len(program.weights)
    gains = program.tick_gain or [None] * len(program.weights)
    for t in range(ticks):
        for k, w in enumerate(program.weights):
            arrived = trains[k][t - program.delay] if t >= program.delay else np.zeros_like(trains[k][0])
            syn = (arrived @ w.T.astype(np.float32)).astype(np.float32)
            if gains[k] is not None:
                syn = syn * gains[k][t]
            m = program.alpha_decay[k] * vs[k] + program.i_offset[k] + syn
            fired = m > program.thresholds[k]
            trains[k + 1][t] = fired
            v = np.where(fired, m - program.thresholds[k], m).astype(np.float32)
            if levels[k] is not None:
                lv = levels[k]
                idx = np.clip(np.searchsorted(lv, v), 1, lv.size - 1)
                lower, upper = lv[idx - 1], lv[idx]
                v = np.where(v <= lower, lower, np.where(v >= upper, upper, np.where(v - lower <= upper - v, lower, upper)))
            vs[k] = v.astype(np.float32)
    return vs[-1], trains[1:]


def small_program(**overrides) -> ChipProgram:
    return make_program(**{"weights": [w // 8 for w in make_program().weights], **overrides})


@pytest.mark.parametrize("seed", range(4))
def test_the_emulator_follows_the_rule_tick_by_tick(seed):
    rng = np.random.default_rng(seed)
    levels = [random_levels(rng, 16, -20, 15), None if seed % 2 else random_levels(rng, 8, -30, 20),
              None if seed < 2 else random_levels(rng, 32, -100, 100)]
    gains = [rng.uniform(0.2, 2.0, 10).astype(np.float32), None, rng.uniform(0.5, 1.5, 10).astype(np.float32)]
    program = small_program(state_levels=levels, tick_gain=gains if seed != 3 else None)
    spikes = rng.random((10, 7, 6)) < 0.4
    result = EmulatorBackend(warn_saturation=False).run_spikes(program, spikes, record_trains=True, record_voltages=True)
    voltages, trains = reference_run(program, spikes)
    for mine, ref in zip(result.spike_trains[1:], trains):
        np.testing.assert_array_equal(mine, ref.astype(bool))
    np.testing.assert_array_equal(result.voltages, voltages)
    assert sum(t.sum() for t in trains) > 0
    if levels[2] is not None:
        assert np.isin(result.voltage_trace, levels[2]).all()  # the trace holds the kept, quantized values
    plain = EmulatorBackend(warn_saturation=False).run_spikes(dataclasses.replace(program, state_levels=None, tick_gain=None), spikes)
    assert not np.array_equal(plain.voltages, result.voltages)


def test_ties_go_to_the_lower_level():
    # One neuron, no input: v = offset each tick; 0.25 lies halfway between the levels 0 and 0.5.
    program = ChipProgram(
        weights=[np.zeros((1, 2), np.int8), np.zeros((1, 1), np.int8)],
        thresholds=[np.full(1, 10.0, np.float32), np.full(1, 5000.0, np.float32)],
        alpha_decay=[np.zeros(1, np.float32), np.ones(1, np.float32)],
        i_offset=[np.full(1, 0.25, np.float32), np.zeros(1, np.float32)],
        obs_bound=np.ones(1, np.float32), ticks=3,
        state_levels=[np.array([0.0, 0.5], np.float32), None],
    )
    ranges = EmulatorBackend().membrane_ranges(program, np.zeros((1, 1), np.float32))
    assert ranges[0] == (0.0, 0.0)


@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_the_float_network_with_the_same_levels_gives_the_emulators_spikes(delay, reset):
    # Integer weights, lambda 1 and no biases: the float network's and the program's membranes are the same numbers.
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 3, 2, net_arch=[12, 10], ticks=12, threshold=6.0, reset=reset, synaptic_delay=delay)
    with th.no_grad():
        for layer in net.linear_layers():
            layer.weight.copy_(th.randint(-4, 5, layer.weight.shape).float())
            layer.bias.zero_()
    rng = np.random.default_rng(1)
    levels = [random_levels(rng, 16, -12, 6), random_levels(rng, 8, -15, 6)]
    net.set_state_levels(levels)
    program, _ = quantize_network(net, 1.0, centered=False)
    assert all(np.array_equal(a, b) for a, b in zip(program.state_levels[:2], levels)) and program.state_levels[2] is None
    obs = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    chip = EmulatorBackend(warn_saturation=False).run(program, obs, record_trains=True)
    with th.no_grad():
        q, trains = net.forward_spikes(net.encoder(th.as_tensor(obs)), return_activity=True)
    for mine, theirs in zip(trains, chip.spike_trains[1:-1]):
        np.testing.assert_array_equal(mine.numpy().astype(bool), theirs)
    np.testing.assert_allclose(chip.voltages, q.numpy(), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_tick_gains_of_a_network_reach_the_program_and_run_as_in_the_float_model(delay, reset):
    th.manual_seed(2)
    net = SpikingQNetwork([1.0] * 3, 2, net_arch=[12], ticks=8, threshold=5.0, tick_gain=True, reset=reset,
                          synaptic_delay=delay)
    with th.no_grad():
        for layer in net.linear_layers():
            layer.weight.copy_(th.randint(-4, 5, layer.weight.shape).float())
            layer.bias.zero_()
        net.tick_gain.copy_(th.tensor(np.random.default_rng(0).choice([0.5, 1.0, 2.0], size=(2, 8)), dtype=th.float32))
    program, _ = quantize_network(net, 1.0, centered=False)
    np.testing.assert_array_equal(np.stack(program.tick_gain), net.tick_gain.detach().numpy())
    obs = np.random.default_rng(3).uniform(-1, 1, (64, 3)).astype(np.float32)
    chip = EmulatorBackend(warn_saturation=False).run(program, obs, record_trains=True)
    with th.no_grad():
        q, trains = net.forward_spikes(net.encoder(th.as_tensor(obs)), return_activity=True)
    np.testing.assert_array_equal(trains[0].numpy().astype(bool), chip.spike_trains[1])
    np.testing.assert_allclose(chip.voltages, q.numpy(), rtol=1e-6, atol=1e-4)


def test_a_program_with_levels_and_gains_round_trips_and_a_file_without_them_loads_as_before(tmp_path):
    rng = np.random.default_rng(0)
    program = small_program(state_levels=[random_levels(rng, 4, -5, 5), None, None],
                            tick_gain=[None, np.linspace(0.5, 1.5, 10, dtype=np.float32), None])
    loaded = ChipProgram.load(program.save(tmp_path / "p.npz"))
    assert loaded == program and loaded.state_levels[1] is None and loaded.tick_gain[0] is None
    assert loaded != dataclasses.replace(program, tick_gain=None)
    assert "state_bits=[2, None, None]" in repr(loaded) and "tick_gain=True" in repr(loaded)
    assert loaded.with_thresholds([1.0, 2.0, 5000.0]).state_levels is not None
    # A file of the format before these fields (version 1, and version 2 without them).
    arrays = saved_arrays(make_program(), tmp_path)
    meta = json.loads(str(arrays["metadata"]))
    for key in ("state_levels", "tick_gain"):
        meta.pop(key)
    arrays["metadata"] = np.array(json.dumps(meta))
    old = ChipProgram.load(write_npz(tmp_path / "old.npz", arrays))
    assert old.state_levels is None and old.tick_gain is None
    shipped = ChipProgram.load(f"{SHIPPED}/chip_program.npz")
    assert shipped.state_levels is None and shipped.tick_gain is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("state_levels", [None, None], "one entry per population"),
        ("state_levels", [np.array([0.0, 1.0, 2.0]), None, None], "2\\^n levels"),
        ("state_levels", [np.array([0.0]), None, None], "2\\^n levels"),
        ("state_levels", [np.array([0.0, 2.0, 1.0, 3.0]), None, None], "strictly increasing"),
        ("state_levels", [np.array([0.0, 1.0, 1.0, 3.0]), None, None], "strictly increasing"),
        ("state_levels", [np.array([0.0, np.nan]), None, None], "finite"),
        ("state_levels", [np.zeros((2, 2)), None, None], "1-D"),
        ("tick_gain", [None, None], "one entry per projection"),
        ("tick_gain", [np.ones(9), None, None], "shape \\(ticks,\\)"),
        ("tick_gain", [np.array([np.inf] * 10), None, None], "finite"),
    ],
)
def test_bad_levels_and_gains_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        small_program(**{field: value})


def test_a_damaged_file_is_refused(tmp_path):
    program = small_program(state_levels=[np.array([0.0, 1.0], np.float32), None, None])
    arrays = saved_arrays(program, tmp_path)
    del arrays["state_levels_0"]
    with pytest.raises(ChipProgramError, match="missing arrays"):
        ChipProgram.load(write_npz(tmp_path / "bad.npz", arrays))
    arrays = saved_arrays(program, tmp_path)
    arrays["state_levels_0"] = np.array([1.0, 0.0], np.float32)
    with pytest.raises(ChipProgramError, match="strictly increasing"):
        ChipProgram.load(write_npz(tmp_path / "bad2.npz", arrays))


def test_backends_that_cannot_run_levels_or_gains_say_so_and_nir_refuses_them():
    quantized = small_program(state_levels=[np.array([0.0, 1.0], np.float32), None, None])
    gained = small_program(tick_gain=[np.ones(10, np.float32), None, None])
    chip = SpiNNaker2Backend(eth_ip="192.168.1.25")
    with pytest.raises(ValueError, match="state_levels.*lif_no_delay"):
        chip._preflight(quantized)
    with pytest.raises(ValueError, match="tick_gain.*lif_no_delay"):
        chip._preflight(gained)
    for program in (quantized, gained):
        with pytest.raises(ValueError, match="emulator"):
            Brian2Backend().run(program, np.zeros((1, 3), np.float32))
        with pytest.raises(NIRError, match="NIR has no primitive"):
            to_nir(program)
        EmulatorBackend(warn_saturation=False).run(program, np.zeros((2, 3), np.float32))


def test_level_schemes():
    u = uniform_levels(-1.0, 3.0, 3)
    np.testing.assert_allclose(u, np.linspace(-1, 3, 8).astype(np.float32))
    for bits in (2, 4, 8, 16):
        c = threshold_centered_levels(-2.0, 1.5, 1.0, bits)
        assert c.size == 2**bits and c.dtype == np.float32 and np.all(np.diff(c) > 0)
        assert c[0] == -2.0 and c[-1] == 1.5
    c = threshold_centered_levels(-2.0, 2.0, 1.0, 5)
    gaps = np.diff(c)
    near = np.argmin(np.abs(c[:-1] - 1.0))
    assert gaps[near] == gaps.min() or gaps[near - 1] == gaps.min()  # finest spacing next to the threshold
    assert gaps.max() > 5 * gaps.min()
    assert threshold_centered_levels(0.0, 1.0, 7.0, 2)[-1] == 1.0  # a threshold outside the range is clipped
    for bad in [dict(bits=0), dict(bits=17), dict(bits=2.5)]:
        with pytest.raises(ValueError, match="state bits"):
            uniform_levels(0.0, 1.0, **bad)
    with pytest.raises(ValueError, match="v_min < v_max"):
        uniform_levels(1.0, 1.0, 2)
    with pytest.raises(ValueError, match="finite"):
        threshold_centered_levels(0.0, np.inf, 0.5, 2)
    with pytest.raises(ValueError, match="sharpness"):
        threshold_centered_levels(0.0, 1.0, 0.5, 2, sharpness=0)


def test_levels_for_the_shipped_agent_span_its_membranes_and_many_levels_keep_its_reward():
    model = DQN.load(f"{SHIPPED}/model.zip", device="cpu")
    program = HardwarePolicy.from_model(model).program
    obs = np.random.default_rng(0).uniform(-1, 1, (256, 4)).astype(np.float32) * program.obs_bound
    ranges = EmulatorBackend().membrane_ranges(program, obs)
    for scheme in ("uniform", "threshold_centered"):
        levels = state_levels_for(program, obs, 12, scheme)
        assert levels[-1] is None and len(levels) == 3
        for lv, (lo, hi) in zip(levels[:2], ranges[:2]):
            assert lv.size == 4096 and lv[0] == np.float32(lo) and lv[-1] == np.float32(hi)
        fine = dataclasses.replace(program, state_levels=levels)
        assert backend_reward(fine, "CartPole-v0", 5, seed=123).mean_reward == 200.0
    with pytest.raises(ValueError, match="scheme"):
        state_levels_for(program, obs, 4, "log")
    coarse = dataclasses.replace(program, state_levels=state_levels_for(program, obs, 1))
    assert backend_reward(coarse, "CartPole-v0", 5, seed=123).mean_reward < 200.0


def test_fit_to_chip_gives_the_program_state_levels_and_leaves_the_model_alone_without_qat():
    from spiking_dqn.pipeline import StateSettings, fit_to_chip

    model = DQN.load(f"{SHIPPED}/model.zip", device="cpu")
    result = fit_to_chip(model, "CartPole-v0", state=StateSettings(4, "uniform", observations=128), method="none",
                         eval_episodes=3)
    levels = result.program.state_levels
    assert [None if lv is None else lv.size for lv in levels] == [16, 16, None]
    assert result.summary()["state_bits"] == [4, 4, None]
    assert model.policy.q_net.q_net.state_levels is None  # no QAT: only the program is quantized
    with pytest.raises(ValueError, match="pass env_id"):
        fit_to_chip(model, None, state=StateSettings(4), method="none", eval_episodes=0)


@pytest.mark.parametrize("bad, match", [(dict(bits=0), "state bits"), (dict(bits=17), "state bits"),
                                        (dict(bits=4, scheme="log"), "scheme"),
                                        (dict(bits=4, observations=0), "observations")])
def test_state_settings_refuse_bad_values(bad, match):
    from spiking_dqn.callbacks import HardwareAwareFineTuning
    from spiking_dqn.pipeline import StateSettings

    with pytest.raises(ValueError, match=match):
        StateSettings(**bad)
    if "observations" not in bad:
        with pytest.raises(ValueError, match=match):
            HardwareAwareFineTuning(state=dict(bits=bad["bits"], scheme=bad.get("scheme", "uniform")))


def test_squat_through_fit_to_chip_trains_with_the_levels_and_the_program_is_the_network(trained_tiny_model):
    import copy

    from spiking_dqn.pipeline import QATSettings, StateSettings, fit_to_chip

    model = copy.deepcopy(trained_tiny_model)
    result = fit_to_chip(model, "CartPole-v1", state=StateSettings(6, "threshold_centered", observations=64),
                         qat=QATSettings(200, check_episodes=0), method="none", eval_episodes=1)
    net = model.policy.q_net.q_net
    assert net.state_levels is not None and model.policy.q_net_target.q_net.state_levels is not None
    program = result.program
    for chip, float_levels, lam in zip(program.state_levels[:-1], net.state_levels, result.grid.lambdas):
        np.testing.assert_allclose(chip, float_levels * np.float32(lam), rtol=1e-6)
    obs = np.random.default_rng(1).uniform(-1, 1, (64, 4)).astype(np.float32)
    with th.no_grad():
        q = net(th.as_tensor(obs))
    np.testing.assert_array_equal(EmulatorBackend().run(program, obs).actions, q.numpy().argmax(1))


def test_deploy_command_with_state_levels(tmp_path, capsys):
    from spiking_dqn.cli import main

    out = tmp_path / "s8.npz"
    assert main(["deploy", f"{SHIPPED}/model.zip", "--state-bits", "8", "--state-levels", "threshold_centered",
                 "--weight-bits", "8", "--final-episodes", "2", "--out", str(out), "--no-progress"]) == 0
    program = ChipProgram.load(out)
    assert [None if lv is None else lv.size for lv in program.state_levels] == [256, 256, None]
    assert main(["deploy", f"{SHIPPED}/model.zip", "--state-bits", "17", "--out", str(out), "--no-progress"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["deploy", f"{SHIPPED}/model.zip", "--state-bits", "8", "--state-levels", "log"])
    assert exc.value.code == 2
