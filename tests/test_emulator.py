"""The emulator backend: chip semantics, agreement with the fake-quantized float model."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch as th

from spiking_dqn.hardware import (
    BackendResult,
    ChipProgram,
    EmulatorBackend,
    SpiNNaker2Backend,
    get_backend,
)
from spiking_dqn.hardware.backend import encode_observations
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import fake_quantize_network, quantize_network


def random_net(delay: int, reset: str, seed: int = 0) -> SpikingQNetwork:
    th.manual_seed(seed)
    return SpikingQNetwork(
        obs_bound=[1.0, 1.0, 1.0, 1.0],
        n_actions=3,
        net_arch=[32, 16],
        ticks=10,
        threshold=0.5,
        reset=reset,
        synaptic_delay=delay,
    )


def random_obs(n: int = 256, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, d)).astype(np.float32)


def reference_run(program: ChipProgram, obs: np.ndarray):
    """The chip semantics of DESIGN.md, literally: tick by tick, population by population."""
    inputs = encode_observations(program, obs)  # (T, B, 2d)
    batch = obs.shape[0]
    sizes = program.layer_sizes
    v = [np.zeros((batch, n), np.float32) for n in sizes[1:]]
    emitted = [np.zeros((program.ticks, batch, n), np.float32) for n in sizes]
    emitted[0] = inputs
    events = np.zeros(batch, np.int64)
    for t in range(program.ticks):
        for k, w in enumerate(program.weights):
            src = t - program.delay
            arriving = emitted[k][src] if src >= 0 else np.zeros((batch, sizes[k]), np.float32)
            events += (arriving.astype(np.int64) * np.count_nonzero(w, axis=0)).sum(1)
            syn = arriving @ w.T.astype(np.float32)
            v[k] = program.alpha_decay[k] * v[k] + program.i_offset[k] + syn
            spike = v[k] > program.thresholds[k]
            if program.reset == "subtract":
                v[k] = np.where(spike, v[k] - program.thresholds[k], v[k])
            else:
                v[k] = np.where(spike, np.float32(program.v_reset), v[k])
            emitted[k + 1][t] = spike
    return v[-1], [e.sum(0).astype(np.int64) for e in emitted], events


def tiny_program(delay: int = 1, reset: str = "subtract", v_reset: float = 0.0, **overrides) -> ChipProgram:
    """1 observation -> 2 input neurons -> 1 hidden neuron -> 1 output, 4 ticks."""
    fields = dict(
        weights=[np.array([[10, 3]], np.int8), np.array([[7]], np.int8)],
        thresholds=[np.array([5.0], np.float32), np.array([5000.0], np.float32)],
        alpha_decay=[np.array([0.5], np.float32), np.array([1.0], np.float32)],
        i_offset=[np.array([1.0], np.float32), np.array([0.5], np.float32)],
        obs_bound=np.array([1.0], np.float32),
        reset=reset,
        v_reset=v_reset,
        ticks=4,
        delay=delay,
    )
    fields.update(overrides)
    return ChipProgram(**fields)


# ---------------------------------------------------------------------- the float model


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("lam", [20.0, [20.0, 10.0, 40.0]])
def test_emulator_matches_fake_quantized_float_model(delay, reset, lam):
    net = random_net(delay, reset)
    program, _ = quantize_network(net, lam)
    obs = random_obs()
    with th.no_grad():
        q_float, counts_float = fake_quantize_network(net, lam)(th.as_tensor(obs), return_activity=True)
    result = EmulatorBackend().run(program, obs)

    hidden_spikes = [int(c.sum()) for c in result.spike_counts[1:-1]]
    assert all(n > 0 for n in hidden_spikes), hidden_spikes  # the comparison is not vacuous
    np.testing.assert_allclose(result.voltages / program.lambdas[-1], q_float.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.q_values(program), q_float.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(result.actions, q_float.numpy().argmax(1))
    # Input and hidden spike counts are identical, spike for spike.
    assert len(result.spike_counts) == len(counts_float) + 1  # plus the output population
    for emulated, float_counts in zip(result.spike_counts, counts_float):
        np.testing.assert_array_equal(emulated, float_counts.numpy().astype(np.int64))
    assert not result.output_saturated.any()


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [0, 1])
def test_emulator_matches_tick_by_tick_reference(delay, reset):
    program, _ = quantize_network(random_net(delay, reset, seed=1), 20.0)
    program = program.with_thresholds([7.0, 9.5, 5000.0])
    obs = random_obs(64, seed=1)
    v_ref, counts_ref, events_ref = reference_run(program, obs)
    result = EmulatorBackend().run(program, obs)
    np.testing.assert_array_equal(result.voltages, v_ref)  # bit for bit
    for got, want in zip(result.spike_counts, counts_ref):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(result.synaptic_events, events_ref)


# ---------------------------------------------------------------------- hand-computed traces


def test_hand_computed_trace_delay_1():
    # Input rates [0.5, 0]: input neuron 0 spikes at ticks 1 and 3; with delay 1 only the
    # first arrives (tick 2). Hidden: v = 1, 1.5, 0.75 + 1 + 10 = 11.75 > 5 -> spike,
    # 6.75; 4.375. Its spike arrives at the output at tick 3: 0.5, 1, 1.5, 2 + 7 = 9.
    result = EmulatorBackend().run(tiny_program(delay=1), np.array([0.5], np.float32))
    np.testing.assert_array_equal(result.voltages, [[9.0]])
    assert [c.tolist() for c in result.spike_counts] == [[[2, 0]], [[1]], [[0]]]
    np.testing.assert_array_equal(result.synaptic_events, [2])
    np.testing.assert_array_equal(result.actions, [0])
    assert result.ticks == 4 and result.backend == "emulator"


def test_hand_computed_trace_delay_0():
    # Spikes arrive in the tick they are emitted: hidden v = 1, 11.5 (spike), 4.25,
    # 13.125 (spike); output 0.5, 8, 8.5, 16. Events: 2 input spikes + 2 hidden spikes.
    result = EmulatorBackend().run(tiny_program(delay=0), np.array([[0.5]], np.float32))
    np.testing.assert_array_equal(result.voltages, [[16.0]])
    assert [c.tolist() for c in result.spike_counts] == [[[2, 0]], [[2]], [[0]]]
    np.testing.assert_array_equal(result.synaptic_events, [4])


def test_reset_to_value():
    # delay 0: hidden 1, 11.5 (spike -> -20), -9, -4.5 + 1 + 10 = 6.5 (spike): with
    # v_reset = -20 the second spike still happens; with -40 it does not.
    result = EmulatorBackend().run(tiny_program(delay=0, reset="zero", v_reset=-20.0), np.array([0.5]))
    assert result.spike_counts[1].tolist() == [[2]]
    result = EmulatorBackend().run(tiny_program(delay=0, reset="zero", v_reset=-40.0), np.array([0.5]))
    assert result.spike_counts[1].tolist() == [[1]]
    np.testing.assert_array_equal(result.voltages, [[9.0]])  # 0.5, 8, 8.5, 9


def test_threshold_is_strict():
    common = dict(alpha_decay=[np.array([0.0], np.float32), np.array([1.0], np.float32)])
    at = tiny_program(i_offset=[np.array([5.0], np.float32), np.array([0.0], np.float32)], **common)
    above = tiny_program(i_offset=[np.array([5.5], np.float32), np.array([0.0], np.float32)], **common)
    zero_obs = np.zeros((1, 1), np.float32)
    assert EmulatorBackend().run(at, zero_obs).spike_counts[1].tolist() == [[0]]
    assert EmulatorBackend().run(above, zero_obs).spike_counts[1].tolist() == [[4]]


def test_output_saturation_is_reported_and_warned():
    program = tiny_program(i_offset=[np.array([0.0], np.float32), np.array([3000.0], np.float32)])
    with pytest.warns(UserWarning, match="threshold"):
        result = EmulatorBackend().run(program, np.zeros((2, 1), np.float32))
    np.testing.assert_array_equal(result.output_saturated, [True, True])
    # 3000, 6000 -> 1000, 4000, 7000 -> 2000: the reset is applied and reported.
    np.testing.assert_array_equal(result.voltages, [[2000.0], [2000.0]])
    assert result.spike_counts[-1].tolist() == [[2], [2]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmulatorBackend(warn_saturation=False).run(program, np.zeros((1, 1), np.float32))


# ---------------------------------------------------------------------- inputs


def test_single_observation_and_torch_input():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    obs = random_obs(3)
    batch = EmulatorBackend().run(program, obs)
    single = EmulatorBackend().run(program, obs[1])
    assert single.voltages.shape == (1, 3) and single.actions.shape == (1,)
    np.testing.assert_array_equal(single.voltages[0], batch.voltages[1])
    np.testing.assert_array_equal(EmulatorBackend().run(program, th.as_tensor(obs)).voltages, batch.voltages)


def test_result_shapes_and_dtypes():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    result = EmulatorBackend().run(program, random_obs(5))
    assert isinstance(result, BackendResult) and result.batch_size == 5
    assert result.voltages.dtype == np.float32 and result.voltages.shape == (5, 3)
    assert result.actions.dtype == np.int64 and result.actions.shape == (5,)
    assert [c.shape for c in result.spike_counts] == [(5, 8), (5, 32), (5, 16), (5, 3)]
    assert all(c.dtype == np.int64 for c in result.spike_counts)
    assert result.synaptic_events.dtype == np.int64 and result.synaptic_events.shape == (5,)
    assert result.output_saturated.dtype == bool
    assert 0 < result.wall_time_s < 60  # measured around the run, in seconds


def test_nan_observation_is_rejected():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    obs = random_obs(4)
    obs[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        EmulatorBackend().run(program, obs)


@pytest.mark.parametrize("shape", [(4, 3), (4, 5), (5,), (2, 2, 4)])
def test_wrong_observation_width_is_rejected(shape):
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        EmulatorBackend().run(program, np.zeros(shape, np.float32))


def test_poisson_encoding_is_seeded():
    program, _ = quantize_network(random_net(1, "subtract"), 20.0)
    poisson = dataclasses.replace(program, encoding="poisson", seed=7)
    obs = np.full((2000, 4), 0.3, np.float32)
    first, second = EmulatorBackend().run(poisson, obs), EmulatorBackend().run(poisson, obs)
    np.testing.assert_array_equal(first.voltages, second.voltages)
    other = EmulatorBackend().run(dataclasses.replace(poisson, seed=8), obs)
    assert not np.array_equal(first.spike_counts[0], other.spike_counts[0])
    # Rates 0.3 on the positive neurons, 0 on the negative ones.
    rates = first.spike_counts[0].mean(0) / program.ticks
    np.testing.assert_allclose(rates[:4], 0.3, atol=0.02)
    np.testing.assert_array_equal(rates[4:], 0.0)


def test_backend_recompiles_for_a_new_program():
    backend = EmulatorBackend()
    a, _ = quantize_network(random_net(1, "subtract", seed=0), 20.0)
    b, _ = quantize_network(random_net(1, "subtract", seed=1), 20.0)
    obs = random_obs(8)
    va, vb = backend.run(a, obs).voltages, backend.run(b, obs).voltages
    np.testing.assert_array_equal(va, EmulatorBackend().run(a, obs).voltages)
    np.testing.assert_array_equal(vb, EmulatorBackend().run(b, obs).voltages)
    assert not np.array_equal(va, vb)


# ---------------------------------------------------------------------- get_backend


def test_get_backend():
    assert isinstance(get_backend(), EmulatorBackend)
    assert isinstance(get_backend("emulator"), EmulatorBackend)
    backend = get_backend("spinnaker2", eth_ip="192.168.1.25")
    assert isinstance(backend, SpiNNaker2Backend) and backend.eth_ip == "192.168.1.25"


def test_get_backend_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="'emulator', 'spinnaker2', 'brian2'"):
        get_backend("loihi")


def test_get_backend_passes_a_backend_object_through_unchanged():
    backend = EmulatorBackend(warn_saturation=False)
    assert get_backend(backend) is backend

    class Custom:  # any object with run(program, obs), no name needed
        def run(self, program, obs):
            raise NotImplementedError

    custom = Custom()
    assert get_backend(custom) is custom


def test_get_backend_refuses_what_is_not_a_backend():
    with pytest.raises(TypeError, match=r"backend name .*'emulator'.* or an object with a run\(program, obs\)"):
        get_backend(3)
    with pytest.raises(TypeError, match=r"options \['warn_saturation'\]"):
        get_backend(EmulatorBackend(), warn_saturation=False)


def test_backend_registry_is_lazy_and_lists_the_names():
    from spiking_dqn.hardware import BACKENDS

    assert list(BACKENDS) == ["emulator", "spinnaker2", "brian2"] and len(BACKENDS) == 3
    assert BACKENDS["emulator"] is EmulatorBackend and BACKENDS["spinnaker2"] is SpiNNaker2Backend
    assert "loihi" not in BACKENDS


# ---------------------------------------------------------------------- memory budget


def long_program(ticks: int) -> ChipProgram:
    return tiny_program(ticks=ticks)


def test_memory_estimate_scales_with_ticks_batch_and_recordings():
    emulator = EmulatorBackend()
    program = long_program(100)
    base = emulator.memory_needed(program, 10)
    assert emulator.memory_needed(long_program(200), 10) == 2 * base
    assert emulator.memory_needed(program, 10, record_trains=True) > base
    assert emulator.memory_needed(program, 10, record_voltages=True) > base
    # At least the input trains of the batch and the recorded trains (float32 input, bool copies).
    n = sum(program.layer_sizes)
    assert emulator.memory_needed(program, 10, record_trains=True) >= 4 * 100 * 10 * 2 + 2 * 100 * 10 * n


def test_run_over_the_memory_budget_is_refused_up_front_with_the_figure():
    program = long_program(100_000)  # MAX_TICKS: a valid program
    emulator = EmulatorBackend(warn_saturation=False, memory_budget_bytes=64 * 1024**2)
    obs = np.full((2000, 1), 0.5, np.float32)
    needed = emulator.memory_needed(program, 2000)
    assert needed > 64 * 1024**2
    figure = rf"about {needed / 1024**3:.2f} GiB .*100000 ticks x 2000 observations.*budget of 0.06 GiB"
    with pytest.raises(ValueError, match=figure):
        emulator.run(program, obs)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        emulator.run_spikes(program, np.zeros((100_000, 2000, 2), bool))
    # Within the budget the same program runs.
    result = emulator.run(program, obs[:1])
    assert result.ticks == 100_000 and result.spike_counts[1].sum() > 0


def test_default_budget_refuses_what_would_exhaust_memory():
    from spiking_dqn.hardware.emulator import MEMORY_BUDGET_BYTES

    program = long_program(100_000)
    emulator = EmulatorBackend()
    assert emulator.memory_budget_bytes == MEMORY_BUDGET_BYTES
    with pytest.raises(ValueError, match="GiB"):
        emulator.run(program, np.zeros((10_000, 1), np.float32), record_trains=True)


@pytest.mark.parametrize("budget", [0, -1, 1.5, True])
def test_memory_budget_must_be_a_positive_integer(budget):
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        EmulatorBackend(memory_budget_bytes=budget)


# ---------------------------------------------------------------------- threads


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_a_batch_on_several_threads_gives_the_single_thread_results_bit_for_bit(reset):
    program, _ = quantize_network(random_net(1, reset), 20.0)
    program = dataclasses.replace(program, state_levels=[np.linspace(-40, 40, 16, dtype=np.float32)] * 3)
    obs = random_obs(EmulatorBackend.CHUNK * 3 + 77, seed=3)
    one = EmulatorBackend(warn_saturation=False, threads=1)
    expected = one.run(program, obs, record_trains=True, record_voltages=True)
    for threads in (2, 3, 7):
        backend = EmulatorBackend(warn_saturation=False, threads=threads)
        assert backend.parts(obs.shape[0]) == min(threads, obs.shape[0] // EmulatorBackend.PER_THREAD) > 1
        got = backend.run(program, obs, record_trains=True, record_voltages=True)
        for name in ("voltages", "actions", "synaptic_events", "output_saturated", "voltage_trace"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        for mine, theirs in zip(got.spike_counts + got.spike_trains, expected.spike_counts + expected.spike_trains):
            np.testing.assert_array_equal(mine, theirs)
        assert backend.membrane_ranges(program, obs) == one.membrane_ranges(program, obs)
    # Small batches stay on one thread; the estimate counts a chunk's working set per thread.
    backend = EmulatorBackend(threads=2)
    assert backend.parts(EmulatorBackend.PER_THREAD * 2 - 1) == 1
    assert backend.memory_needed(program, 4096) > one.memory_needed(program, 4096)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_threads_must_be_a_positive_integer(threads):
    with pytest.raises(ValueError, match="threads"):
        EmulatorBackend(threads=threads)
