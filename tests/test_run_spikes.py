"""Raw input spike trains: ``run_spikes`` on every backend, ``run`` as encode-then-run_spikes, bad trains."""

import numpy as np
import pytest
import torch as th

from spiking_dqn.hardware import ChipProgram, EmulatorBackend
from spiking_dqn.hardware.backend import check_input_spikes, encode_observations


def program_2_layers(ticks: int = 6, reset: str = "subtract") -> ChipProgram:
    """obs_dim 2 -> 4 input neurons -> 5 hidden -> 3 outputs."""
    rng = np.random.default_rng(0)
    return ChipProgram(
        weights=[
            rng.integers(-40, 60, size=(5, 4)).astype(np.int8),
            rng.integers(-30, 30, size=(3, 5)).astype(np.int8),
        ],
        thresholds=[np.linspace(20.0, 40.0, 5).astype(np.float32), np.full(3, 5000.0, np.float32)],
        alpha_decay=[np.full(5, 0.9, np.float32), np.ones(3, np.float32)],
        i_offset=[np.array([1.5, 0.0, -0.5, 2.0, 0.25], np.float32), np.array([0.5, -0.5, 0.0], np.float32)],
        obs_bound=np.ones(2, np.float32),
        reset=reset,
        ticks=ticks,
    )


def random_spikes(program: ChipProgram, batch: int, p: float = 0.5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((program.ticks, batch, program.layer_sizes[0])) < p


def test_run_is_encode_then_run_spikes():
    program = program_2_layers()
    obs = np.random.default_rng(1).uniform(-1.2, 1.2, size=(7, 2)).astype(np.float32)
    backend = EmulatorBackend()
    via_run = backend.run(program, obs, record_trains=True, record_voltages=True)
    inputs = encode_observations(program, obs)
    via_spikes = backend.run_spikes(program, inputs, record_voltages=True, record_trains=True)
    np.testing.assert_array_equal(via_run.voltages, via_spikes.voltages)
    np.testing.assert_array_equal(via_run.voltage_trace, via_spikes.voltage_trace)
    np.testing.assert_array_equal(via_run.synaptic_events, via_spikes.synaptic_events)
    for a, b in zip(via_run.spike_trains, via_spikes.spike_trains):
        np.testing.assert_array_equal(a, b)
    assert via_run.spike_trains[1].any()


def test_run_spikes_feeds_the_trains_to_the_input_with_the_encoder_timing():
    # A readout-only program (input -> output integrator): one input spike at tick 2 on
    # input neuron 1 arrives at tick 3 (delay 1) and adds weights[0][:, 1] to the voltages
    # from then on; nothing changes before tick 3.
    program = ChipProgram(
        weights=[np.array([[5, 7, 0, 1], [0, -3, 2, 0], [1, 11, 0, 0]], np.int8)],
        thresholds=[np.full(3, 5000.0, np.float32)],
        alpha_decay=[np.ones(3, np.float32)],
        i_offset=[np.array([0.5, -0.25, 0.0], np.float32)],
        obs_bound=np.ones(2, np.float32),
        ticks=5,
    )
    silent = np.zeros((5, 1, 4), bool)
    one = silent.copy()
    one[2, 0, 1] = True
    backend = EmulatorBackend()
    quiet = backend.run_spikes(program, silent, record_voltages=True)
    kicked = backend.run_spikes(program, one, record_voltages=True, record_trains=True)
    assert kicked.spike_counts[0].tolist() == [[0, 1, 0, 0]]
    np.testing.assert_array_equal(kicked.spike_trains[0], one)
    np.testing.assert_array_equal(kicked.voltage_trace[:3], quiet.voltage_trace[:3])
    np.testing.assert_array_equal(kicked.voltage_trace[3:] - quiet.voltage_trace[3:], np.tile([7, -3, 11], (2, 1, 1)))
    np.testing.assert_array_equal(kicked.synaptic_events, [3])  # one arrived spike, fan-out 3


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32, np.float64])
def test_bool_and_0_1_numbers_give_the_same_result(dtype):
    program = program_2_layers()
    spikes = random_spikes(program, 5)
    want = EmulatorBackend().run_spikes(program, spikes)
    got = EmulatorBackend().run_spikes(program, spikes.astype(dtype))
    np.testing.assert_array_equal(got.voltages, want.voltages)
    for a, b in zip(got.spike_counts, want.spike_counts):
        np.testing.assert_array_equal(a, b)


def test_torch_trains_are_accepted():
    program = program_2_layers()
    spikes = random_spikes(program, 3)
    got = EmulatorBackend().run_spikes(program, th.as_tensor(spikes))
    np.testing.assert_array_equal(got.voltages, EmulatorBackend().run_spikes(program, spikes).voltages)


def test_check_input_spikes_returns_a_float32_copy():
    program = program_2_layers()
    spikes = random_spikes(program, 2).astype(np.int8)
    checked = check_input_spikes(program, spikes)
    assert checked.dtype == np.float32 and checked.shape == spikes.shape
    np.testing.assert_array_equal(checked, spikes)
    checked[:] = 0
    assert spikes.any()


@pytest.mark.parametrize(
    "spikes, match",
    [
        (np.zeros((6, 4), bool), r"shape \(ticks, batch, n_inputs\) = \(6, batch, 4\), got 2-D shape \(6, 4\)"),
        (np.zeros((6, 1, 4, 1), bool), r"got 4-D"),
        (np.zeros((5, 1, 4), bool), r"5 ticks but the program runs 6"),
        (np.zeros((7, 2, 4), bool), r"7 ticks but the program runs 6"),
        (np.zeros((6, 1, 3), bool), r"3 input neurons but the program has 4"),
        (np.full((6, 1, 4), 0.5, np.float32), r"bool or 0/1, got other values \[0\.5\]"),
        (np.full((6, 1, 4), 2, np.int64), r"bool or 0/1, got other values \[2\]"),
        (np.full((6, 1, 4), -1, np.int8), r"other values \[-1\]"),
        (np.full((6, 1, 4), np.nan, np.float32), "NaN"),
        (np.full((6, 1, 4), np.inf), r"other values \[inf\]"),
        (np.full((6, 1, 4), "1"), "dtype <U1"),
        (np.zeros((6, 1, 4), complex), "dtype complex128"),
    ],
)
def test_bad_trains_are_refused_with_a_clear_error(spikes, match):
    program = program_2_layers()
    with pytest.raises(ValueError, match=match):
        check_input_spikes(program, spikes)
    with pytest.raises(ValueError, match=match):
        EmulatorBackend().run_spikes(program, spikes)


def test_brian2_run_spikes_matches_the_emulator_and_refuses_bad_trains():
    pytest.importorskip("brian2")
    from spiking_dqn.hardware.brian2 import Brian2Backend

    program = program_2_layers(ticks=8, reset="zero")
    spikes = random_spikes(program, 3, seed=4)
    got = Brian2Backend().run_spikes(program, spikes, record_voltages=True, record_trains=True)
    want = EmulatorBackend().run_spikes(program, spikes, record_voltages=True, record_trains=True)
    np.testing.assert_allclose(got.voltage_trace, want.voltage_trace, rtol=1e-6, atol=1e-5)
    for a, b in zip(got.spike_trains, want.spike_trains):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="5 ticks but the program runs 8"):
        Brian2Backend().run_spikes(program, spikes[:5])
