"""The emulator's optional per-tick recordings: spike trains and output voltage traces."""

import numpy as np
import torch as th

from spiking_dqn.hardware import EmulatorBackend
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import quantize_network


def make_program(reset: str = "subtract"):
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 3, net_arch=[24, 12], ticks=8, threshold=0.5, reset=reset)
    program, _ = quantize_network(net, "auto")
    return program


def test_default_run_records_nothing():
    program = make_program()
    result = EmulatorBackend().run(program, np.zeros(4, np.float32))
    assert result.spike_trains is None and result.voltage_trace is None


def test_recorded_trains_and_voltages_match_the_result():
    program = make_program()
    obs = np.random.default_rng(1).uniform(-1.2, 1.2, size=(32, 4)).astype(np.float32)
    backend = EmulatorBackend(warn_saturation=False)
    plain = backend.run(program, obs)
    recorded = backend.run(program, obs, record_trains=True, record_voltages=True)
    # Recording changes nothing else.
    np.testing.assert_array_equal(plain.voltages, recorded.voltages)
    np.testing.assert_array_equal(plain.synaptic_events, recorded.synaptic_events)
    sizes = program.layer_sizes
    assert len(recorded.spike_trains) == len(sizes)
    for train, counts, n in zip(recorded.spike_trains, recorded.spike_counts, sizes):
        assert train.dtype == np.bool_ and train.shape == (program.ticks, 32, n)
        np.testing.assert_array_equal(train.sum(0), counts)
    assert recorded.spike_trains[1].any(), "the hidden layer should spike for this program"
    trace = recorded.voltage_trace
    assert trace.dtype == np.float32 and trace.shape == (program.ticks, 32, program.n_actions)
    np.testing.assert_array_equal(trace[-1], recorded.voltages)


def test_voltage_trace_follows_the_integrator_rule():
    """Output neurons integrate: v_t = v_{t-1} + i_offset + syn_t (alpha 1, no spikes below 5000)."""
    program = make_program(reset="zero")
    obs = np.random.default_rng(2).uniform(-1, 1, size=(5, 4)).astype(np.float32)
    r = EmulatorBackend().run(program, obs, record_trains=True, record_voltages=True)
    last_hidden = r.spike_trains[-2].astype(np.float32)  # (T, B, n)
    w = program.weights[-1].astype(np.float32)
    v = np.zeros((5, program.n_actions), np.float32)
    for t in range(program.ticks):
        syn = last_hidden[t - program.delay] @ w.T if t >= program.delay else np.zeros_like(v)
        v = v + program.i_offset[-1] + syn
        np.testing.assert_allclose(r.voltage_trace[t], v, rtol=1e-6, atol=1e-4)


def test_chunked_batches_equal_one_observation_at_a_time():
    """run() simulates in chunks of EmulatorBackend.CHUNK; results must not depend on it."""
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 3, net_arch=[16, 8], ticks=8, threshold=0.5)
    program, _ = quantize_network(net, 20.0)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(EmulatorBackend.CHUNK * 2 + 37, 4)).astype(np.float32)
    emulator = EmulatorBackend()
    whole = emulator.run(program, obs, record_trains=True, record_voltages=True)
    singles = [emulator.run(program, o) for o in obs[::25]]
    assert np.array_equal(whole.voltages[::25], np.concatenate([r.voltages for r in singles]))
    for k in range(len(whole.spike_counts)):
        assert np.array_equal(whole.spike_counts[k][::25], np.concatenate([r.spike_counts[k] for r in singles]))
    assert np.array_equal(whole.synaptic_events[::25], np.concatenate([r.synaptic_events for r in singles]))
    assert whole.spike_trains[1].shape == (8, obs.shape[0], 16)
    assert whole.voltage_trace.shape == (8, obs.shape[0], 3)
    assert np.array_equal(whole.voltage_trace[-1], whole.voltages)
