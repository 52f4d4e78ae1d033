"""SpiNNaker2 backend: translation into py-spinnaker2 objects, checked with a fake ``snn`` module."""

import sys
import types

import numpy as np
import pytest
import torch as th

from spiking_dqn.hardware import ChipConnectionError, EmulatorBackend, SpiNNaker2Backend, get_backend
from spiking_dqn.hardware.backend import encode_observations
from spiking_dqn.hardware.spinnaker2 import build_network, chip_connection_delay, connection_list
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import quantize_network


class FakePopulation:
    def __init__(self, size, neuron_model, params, name=None, record=None):
        self.size, self.neuron_model, self.params, self.name = size, neuron_model, params, name
        self.record = list(record or [])
        self.voltages, self.spikes = {}, {}

    def get_voltages(self):
        return self.voltages

    def get_spikes(self):
        return self.spikes


class FakeProjection:
    def __init__(self, pre, post, connections):
        self.pre, self.post, self.connections = pre, post, connections


class FakeNetwork:
    def __init__(self, name=""):
        self.name, self.populations, self.projections = name, [], []

    def add(self, *objects):
        for obj in objects:
            (self.projections if isinstance(obj, FakeProjection) else self.populations).append(obj)


fake_snn = types.SimpleNamespace(Population=FakePopulation, Projection=FakeProjection, Network=FakeNetwork)


class FakeChip:
    """Stands in for ``hardware.SpiNNaker2Chip``: simulates the built network from its
    py-spinnaker2 description only (spike lists, params, connection lists), with
    py-spinnaker2's delay rule (a connection written with delay ``D`` delivers ``D + 1``
    ticks later, as the reference trace shows for ``D = 0``), and fills in the recordings."""

    instances: list = []

    def __init__(self, eth_ip):
        self.eth_ip = eth_ip
        FakeChip.instances.append(self)

    def run(self, net, ticks):
        pops = net.populations
        emitted = {id(p): np.zeros((ticks, p.size), np.float32) for p in pops}
        for p in pops:
            if p.neuron_model == "spike_list":
                for i, times in p.params.items():
                    emitted[id(p)][times, i] = 1.0
        state = {id(p): np.zeros(p.size, np.float32) for p in pops}
        v_trace = {id(p): np.zeros((ticks, p.size), np.float32) for p in pops}
        for t in range(ticks):
            for p in pops:
                if p.neuron_model != "lif_no_delay":
                    continue
                syn = np.zeros(p.size, np.float32)
                for proj in net.projections:
                    if proj.post is p:
                        for pre, post, w, delay in proj.connections:
                            if t - delay - 1 >= 0 and emitted[id(proj.pre)][t - delay - 1, pre]:
                                syn[post] += w
                prm = p.params
                v = prm["alpha_decay"] * state[id(p)] + prm["i_offset"] + syn
                spike = v > prm["threshold"]
                if prm["reset"] == "reset_by_subtraction":
                    v = np.where(spike, v - prm["threshold"], v)
                else:
                    v = np.where(spike, np.float32(prm["v_reset"]), v)
                state[id(p)] = v.astype(np.float32)
                v_trace[id(p)][t] = v
                emitted[id(p)][t] = spike
        for p in pops:
            if "v" in p.record:
                p.voltages = {i: v_trace[id(p)][:, i] for i in range(p.size)}
            if "spikes" in p.record:
                p.spikes = {i: list(np.flatnonzero(emitted[id(p)][:, i])) for i in range(p.size)}


class UnreachableChip:
    def __init__(self, eth_ip):
        self.eth_ip = eth_ip

    def run(self, net, ticks):
        raise TimeoutError("no answer from 10.0.0.99")


def install_fake_spinnaker2(monkeypatch, chip_class):
    package = types.ModuleType("spinnaker2")
    package.snn = fake_snn
    package.hardware = types.SimpleNamespace(SpiNNaker2Chip=chip_class)
    monkeypatch.setitem(sys.modules, "spinnaker2", package)


def quantized(delay=1, reset="subtract", seed=0):
    th.manual_seed(seed)
    net = SpikingQNetwork(
        [1.0, 2.0, 1.0], 2, net_arch=[12, 8], ticks=8, threshold=0.5, reset=reset, synaptic_delay=delay
    )
    program, _ = quantize_network(net, 20.0)
    return program


def obs_batch(n=6, seed=0):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, 3)).astype(np.float32)


@pytest.mark.parametrize("reset, s2_reset", [("subtract", "reset_by_subtraction"), ("zero", "reset_to_v_reset")])
def test_build_network_translates_every_part(reset, s2_reset):
    program = quantized(1, reset)
    trains = encode_observations(program, obs_batch(1))[:, 0]  # (ticks, 2d)
    built = build_network(program, trains, fake_snn)
    net = built.network

    pops = net.populations
    assert [p.size for p in pops] == [6, 12, 8, 2]
    assert [p.neuron_model for p in pops] == ["spike_list", "lif_no_delay", "lif_no_delay", "lif_no_delay"]
    assert built.input_population is pops[0] and built.output_population is pops[-1]
    assert built.hidden_populations == pops[1:3]
    # Input: {neuron: [ticks with a spike]} from the encoded train, every neuron listed.
    assert set(pops[0].params) == set(range(6))
    for i in range(6):
        assert pops[0].params[i] == [int(t) for t in np.flatnonzero(trains[:, i])]
    assert sum(len(v) for v in pops[0].params.values()) == int(trains.sum()) > 0
    # Neuron parameters.
    for k, pop in enumerate(pops[1:]):
        assert set(pop.params) == {"threshold", "alpha_decay", "i_offset", "v_reset", "reset"}
        np.testing.assert_array_equal(pop.params["threshold"], program.thresholds[k])
        np.testing.assert_array_equal(pop.params["alpha_decay"], program.alpha_decay[k])
        np.testing.assert_array_equal(pop.params["i_offset"], program.i_offset[k])
        assert pop.params["v_reset"] == program.v_reset and pop.params["reset"] == s2_reset
    np.testing.assert_array_equal(pops[-1].params["threshold"], [5000.0, 5000.0])
    assert [p.record for p in pops[1:3]] == [["spikes"], ["spikes"]]
    assert "v" in pops[-1].record
    # Projections: consecutive populations, nonzero weights only, py-spinnaker2 delay
    # program.delay - 1 = 0 (a delay-0 connection already arrives one tick later).
    assert len(net.projections) == 3
    for k, proj in enumerate(net.projections):
        assert proj.pre is pops[k] and proj.post is pops[k + 1]
        w = program.weights[k]
        assert len(proj.connections) == np.count_nonzero(w)
        dense = np.zeros_like(w)
        for pre, post, weight, d in proj.connections:
            assert d == 0 and weight != 0
            assert all(isinstance(x, int) for x in (pre, post, weight, d))
            dense[post, pre] = weight
        np.testing.assert_array_equal(dense, w)


def test_connection_delay_override_and_bad_trains():
    program = quantized(delay=1)
    trains = encode_observations(program, obs_batch(1))[:, 0]
    assert chip_connection_delay(program) == 0
    built = build_network(program, trains, fake_snn, connection_delay=2)  # for experiments
    assert {c[3] for proj in built.projections for c in proj.connections} == {2}
    with pytest.raises(ValueError, match="spike_trains"):
        build_network(program, trains[:, :4], fake_snn)


def test_delay_0_program_is_refused_before_the_chip_is_contacted(monkeypatch):
    install_fake_spinnaker2(monkeypatch, FakeChip)
    FakeChip.instances.clear()
    program = quantized(delay=0)
    trains = encode_observations(program, obs_batch(1))[:, 0]
    for call in (
        lambda: build_network(program, trains, fake_snn),
        lambda: build_network(program, trains, fake_snn, connection_delay=0),  # the override does not lift it
        lambda: SpiNNaker2Backend(eth_ip="192.168.1.25").run(program, obs_batch(2)),
        lambda: SpiNNaker2Backend(eth_ip="192.168.1.25", connection_delay=0).run_spikes(
            program, encode_observations(program, obs_batch(2))
        ),
        lambda: SpiNNaker2Backend(eth_ip="192.168.1.25")._preflight(program),
    ):
        with pytest.raises(ValueError, match="delay=0.*cannot propagate within a tick"):
            call()
    assert FakeChip.instances == []


def test_delay_0_program_is_refused_even_without_py_spinnaker2(monkeypatch):
    monkeypatch.setitem(sys.modules, "spinnaker2", None)
    with pytest.raises(ValueError, match="cannot propagate within a tick"):
        SpiNNaker2Backend(eth_ip="192.168.1.25").run(quantized(delay=0), obs_batch(1))


def test_connection_list_skips_zero_weights():
    w = np.array([[0, 5, 0], [-3, 0, 127]], np.int8)  # (n_post, n_pre)
    assert connection_list(w, 1) == [[0, 1, -3, 1], [1, 0, 5, 1], [2, 1, 127, 1]]


def test_run_on_fake_chip_matches_emulator(monkeypatch):
    install_fake_spinnaker2(monkeypatch, FakeChip)
    FakeChip.instances.clear()
    program = quantized(1, seed=2)
    obs = obs_batch(5, seed=2)
    chip = SpiNNaker2Backend(eth_ip="192.168.1.25").run(program, obs)
    emulated = EmulatorBackend().run(program, obs)
    assert len(FakeChip.instances) == 5 and FakeChip.instances[0].eth_ip == "192.168.1.25"
    assert chip.backend == "spinnaker2"
    np.testing.assert_allclose(chip.voltages, emulated.voltages, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(chip.actions, emulated.actions)
    for got, want in zip(chip.spike_counts, emulated.spike_counts):
        np.testing.assert_array_equal(got, want)
    assert sum(int(c.sum()) for c in chip.spike_counts[1:-1]) > 0
    np.testing.assert_array_equal(chip.synaptic_events, emulated.synaptic_events)


def test_run_spikes_on_fake_chip_matches_emulator(monkeypatch):
    install_fake_spinnaker2(monkeypatch, FakeChip)
    program = quantized(1, seed=3)
    spikes = np.random.default_rng(3).random((program.ticks, 4, program.layer_sizes[0])) < 0.4
    chip = SpiNNaker2Backend(eth_ip="192.168.1.25").run_spikes(
        program, spikes, record_voltages=True, record_trains=True
    )
    emulated = EmulatorBackend().run_spikes(program, spikes, record_voltages=True, record_trains=True)
    np.testing.assert_allclose(chip.voltage_trace, emulated.voltage_trace, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(chip.voltage_trace[-1], chip.voltages)
    for got, want in zip(chip.spike_trains, emulated.spike_trains):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(chip.spike_trains[0], spikes)
    assert sum(int(t.sum()) for t in chip.spike_trains[1:-1]) > 0
    # run() is encode-then-run_spikes.
    obs = obs_batch(3, seed=3)
    via_run = SpiNNaker2Backend(eth_ip="192.168.1.25").run(program, obs)
    via_spikes = SpiNNaker2Backend(eth_ip="192.168.1.25").run_spikes(program, encode_observations(program, obs))
    np.testing.assert_array_equal(via_run.voltages, via_spikes.voltages)


def test_run_spikes_refuses_bad_trains_before_the_chip(monkeypatch):
    install_fake_spinnaker2(monkeypatch, FakeChip)
    FakeChip.instances.clear()
    program = quantized(1)
    with pytest.raises(ValueError, match="ticks"):
        SpiNNaker2Backend(eth_ip="192.168.1.25").run_spikes(program, np.zeros((3, 1, 6), bool))
    assert FakeChip.instances == []


def test_unreachable_chip_gives_a_clear_error(monkeypatch):
    install_fake_spinnaker2(monkeypatch, UnreachableChip)
    with pytest.raises(ChipConnectionError, match=r"10\.0\.0\.99.*ping"):
        SpiNNaker2Backend(eth_ip="10.0.0.99").run(quantized(), obs_batch(1))
    assert issubclass(ChipConnectionError, RuntimeError)


def test_missing_py_spinnaker2_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "spinnaker2", None)  # makes `import spinnaker2` fail
    backend = get_backend("spinnaker2", eth_ip="192.168.1.25")  # constructing needs no import
    with pytest.raises(ImportError, match="not on PyPI"):
        backend.run(quantized(), obs_batch(1))


def test_backend_validates_its_arguments():
    with pytest.raises(ValueError, match="eth_ip"):
        SpiNNaker2Backend(eth_ip="")
    with pytest.raises(ValueError, match="eth_ip"):
        SpiNNaker2Backend(eth_ip=3)
    with pytest.raises(ValueError, match="NaN"):
        SpiNNaker2Backend(eth_ip="192.168.1.25").run(quantized(), np.full((1, 3), np.nan))


def test_missing_eth_ip_says_to_pass_it():
    with pytest.raises(ValueError, match=r"pass eth_ip=\.\.\."):
        SpiNNaker2Backend()
    with pytest.raises(ValueError, match=r"pass eth_ip=\.\.\."):
        get_backend("spinnaker2")


def test_hardware_policy_on_spinnaker2_without_eth_ip_says_to_pass_it():
    from spiking_dqn.hardware_policy import HardwarePolicy

    with pytest.raises(ValueError, match=r"pass eth_ip=\.\.\."):
        HardwarePolicy(quantized(), backend="spinnaker2")
    assert HardwarePolicy(quantized(), backend="spinnaker2", eth_ip="192.168.1.25").backend.eth_ip == "192.168.1.25"


def test_from_model_on_spinnaker2_without_eth_ip_says_to_pass_it():
    from stable_baselines3 import DQN

    from spiking_dqn import SpikingDQNPolicy
    from spiking_dqn.hardware_policy import HardwarePolicy

    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs={"net_arch": [8]}, learning_starts=0, device="cpu")
    with pytest.raises(ValueError, match=r"pass eth_ip=\.\.\."):
        HardwarePolicy.from_model(model, backend="spinnaker2")


def test_importing_the_package_does_not_import_py_spinnaker2(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    # An importable stand-in for py-spinnaker2, so that an eager import would show in sys.modules.
    (tmp_path / "spinnaker2").mkdir()
    (tmp_path / "spinnaker2" / "__init__.py").write_text("STAND_IN = True\n")
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, spiking_dqn.hardware, spiking_dqn.hardware.spinnaker2\n"
        "assert 'spinnaker2' not in sys.modules, 'imported py-spinnaker2 at import time'\n"
        "import spinnaker2; assert spinnaker2.STAND_IN  # the stand-in was importable all along\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)]), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env, timeout=300)


def test_program_too_large_for_one_chip_is_refused_before_the_chip_is_contacted(monkeypatch):
    from spiking_dqn.hardware.mapping import PES_PER_CHIP, ChipCapacityError
    from test_mapping import wide_program

    install_fake_spinnaker2(monkeypatch, FakeChip)
    FakeChip.instances.clear()
    program = wide_program(PES_PER_CHIP * 250)
    with pytest.raises(ChipCapacityError, match=rf"needs {PES_PER_CHIP + 2} cores"):
        SpiNNaker2Backend(eth_ip="192.168.1.25").run(program, np.zeros((1, program.obs_dim), np.float32))
    assert FakeChip.instances == []
