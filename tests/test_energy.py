"""Energy and latency model: estimates only, clearly labelled, near the paper's figure."""

import dataclasses

import numpy as np
import pytest
import torch as th

from spiking_dqn.hardware import EmulatorBackend, EnergyModel
from spiking_dqn.hardware.energy import EnergyEstimate, cartpole_reference_estimate, estimate
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import quantize_network


@pytest.fixture(scope="module")
def emulated_batch():
    """A small chip program and its emulator result on 32 observations."""
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 8], ticks=10, threshold=0.5)
    program, _ = quantize_network(net, 20.0)
    obs = np.random.default_rng(0).uniform(-1, 1, (32, 4)).astype(np.float32)
    return program, EmulatorBackend().run(program, obs)


def test_estimate_from_a_backend_result(emulated_batch):
    program, result = emulated_batch
    est = estimate(result, program)
    model = EnergyModel()
    assert isinstance(est, EnergyEstimate)
    assert est.time_energy_j == pytest.approx(0.34 * 10 * 1e-3)
    events = result.synaptic_events.mean()
    assert events > 0 and est.synaptic_events == pytest.approx(events)
    assert est.neuron_updates == (16 + 8 + 2) * 10
    expected_activity = (
        events * model.energy_per_synaptic_event_j + est.neuron_updates * model.energy_per_neuron_update_j
    )
    assert est.activity_energy_j == pytest.approx(expected_activity)
    assert est.total_energy_j == pytest.approx(est.time_energy_j + est.activity_energy_j)
    assert est.latency_s == pytest.approx(10e-3)
    assert est.n_inferences == 32 and est.ticks == 10


def test_every_figure_is_labelled_estimated_and_measured_stays_apart(emulated_batch):
    program, result = emulated_batch
    est = estimate(result, program)
    assert est.measured == {}
    assert set(est.labels.values()) == {"estimated"}
    assert "estimated" in str(est) and "measured" not in str(est)
    measured = estimate(result, program, measured={"energy_j": 0.006, "latency_s": 0.012})
    assert measured.total_energy_j == est.total_energy_j  # measurements never enter the estimate
    assert measured.labels["measured.energy_j"] == "measured"
    data = measured.to_dict()
    assert data["measured"] == {"energy_j": 0.006, "latency_s": 0.012}
    assert data["estimated"]["total_energy_j"] == est.total_energy_j
    assert "0.006 (measured)" in str(measured)


def test_placeholders_are_flagged():
    model = EnergyModel()
    assert model.placeholder
    assert set(model.placeholders) == {"energy_per_synaptic_event_j", "energy_per_neuron_update_j"}
    assert model.chip_power_w == 0.34 and model.tick_s == 1e-3
    assert model.reference_cartpole_chip_j == 0.006 and model.reference_cartpole_gpu_j == 0.145
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.chip_power_w = 1.0
    assert not EnergyModel(placeholders=()).placeholder


def test_tick_duration_and_counts_inputs(emulated_batch):
    program, result = emulated_batch
    slow = estimate(result, program, tick_s=2e-3)
    base = estimate(result, program)
    assert slow.time_energy_j == pytest.approx(2 * base.time_energy_j)
    assert slow.latency_s == pytest.approx(2 * base.latency_s)
    from_mapping = estimate({"synaptic_events": result.synaptic_events}, program)
    from_array = estimate(result.synaptic_events, program)
    assert from_mapping.total_energy_j == from_array.total_energy_j == base.total_energy_j
    scalar = estimate(
        1000, program, model=EnergyModel(energy_per_synaptic_event_j=1e-6, energy_per_neuron_update_j=0.0)
    )
    assert scalar.activity_energy_j == pytest.approx(1e-3)


@pytest.mark.parametrize("bad", [{"spikes": 3}, [-1, 2], np.array([]), float("nan"), "many"])
def test_invalid_counts(emulated_batch, bad):
    program, _ = emulated_batch
    with pytest.raises(ValueError):
        estimate(bad, program)


def test_invalid_model_constants():
    with pytest.raises(ValueError):
        EnergyModel(chip_power_w=-1.0)
    with pytest.raises(ValueError):
        EnergyModel(tick_s=0.0)


def test_cartpole_estimate_is_near_the_papers_order_of_magnitude():
    est = cartpole_reference_estimate()
    ratio = est.total_energy_j / EnergyModel().reference_cartpole_chip_j
    assert 0.1 < ratio < 10, ratio
    assert est.time_energy_j > 100 * est.activity_energy_j  # the chip's running power dominates
    assert est.latency_s == pytest.approx(0.01)
    assert est.total_energy_j < EnergyModel().reference_cartpole_gpu_j / 10
