"""The external reference: a trace of py-spinnaker2's own Brian2 backend, replayed by our executors.

``data/lif_spinnaker2.csv`` (licence and source in ``data/spinnaker2_lif_trace.LICENSE``)
was recorded by the NIR paper's authors with ``spinnaker2.brian2_sim.Brian2Backend``: one
``spike_list`` input neuron, one projection written with py-spinnaker2 delay 0 into one
``lif_no_delay`` neuron with ``alpha_decay = 0.96``, integer weight 102, ``threshold =
255.05``, ``i_offset = 0``, reset to ``v_reset = 0``; 1000 input ticks, 1001 ticks run.
Row ``i``: the input spike emitted at tick ``i``; the voltage at tick ``i + 1`` (after that
tick's reset) divided by the script's scale 102.02; the output spike at tick ``i + 1``.

The program that exposes that neuron has one projection, so the neuron is the program's
readout population (a readout obeys the same ``lif_no_delay`` rule, with its own threshold
and decay), whose per-tick voltages are ``BackendResult.voltage_trace`` and whose spikes are
the last of ``BackendResult.spike_trains``. The input population has two neurons (the
signed code of a one-dimensional observation): the recorded input drives neuron 0, neuron
1 has weight 0 and never spikes. py-spinnaker2's delay 0 is the program's ``delay = 1``.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from spiking_dqn.hardware import ChipProgram, EmulatorBackend

TRACE = Path(__file__).parent / "data" / "lif_spinnaker2.csv"
SCALE = 102.02  # the producing script's weight and threshold scale; column 2 is divided by it
TICKS = 1001


@pytest.fixture(scope="module")
def trace() -> np.ndarray:
    data = np.loadtxt(TRACE, delimiter=",")
    assert data.shape == (1000, 3)
    return data


def one_neuron_program() -> ChipProgram:
    return ChipProgram(
        weights=[np.array([[102, 0]], np.int8)],
        thresholds=[np.array([255.05], np.float32)],
        alpha_decay=[np.array([0.96], np.float32)],
        i_offset=[np.zeros(1, np.float32)],
        obs_bound=np.ones(1, np.float32),
        reset="zero",
        v_reset=0.0,
        ticks=TICKS,
        delay=1,
    )


def recorded_input(trace: np.ndarray) -> np.ndarray:
    spikes = np.zeros((TICKS, 1, 2), dtype=bool)  # (ticks, batch, 2 input neurons)
    spikes[: trace.shape[0], 0, 0] = trace[:, 0] == 1
    return spikes


def check_against_trace(backend, trace: np.ndarray) -> None:
    program = one_neuron_program()
    result = backend.run_spikes(program, recorded_input(trace), record_voltages=True, record_trains=True)
    out_spikes = result.spike_trains[-1][:, 0, 0]
    voltage = result.voltage_trace[:, 0, 0]
    # Tick 0: nothing has arrived yet (the first input spike arrives one tick after it is sent).
    assert not out_spikes[0] and voltage[0] == 0.0
    # Every output spike at the same tick: rows 460, 510, 710 and 760 of the trace.
    assert int(trace[:, 2].sum()) == 4
    np.testing.assert_array_equal(np.flatnonzero(out_spikes[1:]), np.flatnonzero(trace[:, 2]))
    # Voltages after each tick's reset, to 1e-5 relative (0 exactly where the trace is 0).
    np.testing.assert_allclose(voltage[1:], trace[:, 1] * SCALE, rtol=1e-5, atol=0)
    assert result.spike_counts[0].tolist() == [[int(trace[:, 0].sum()), 0]]
    assert result.spike_counts[-1].tolist() == [[4]] and result.output_saturated.tolist() == [True]


def test_emulator_reproduces_the_py_spinnaker2_trace(trace):
    check_against_trace(EmulatorBackend(warn_saturation=False), trace)


def test_brian2_reproduces_the_py_spinnaker2_trace(trace):
    pytest.importorskip("brian2")
    from spiking_dqn.hardware.brian2 import Brian2Backend

    check_against_trace(Brian2Backend(warn_saturation=False), trace)


def test_the_trace_rejects_a_shifted_delay(trace):
    """The comparison can fail: with same-tick propagation (delay 0) the spikes come a tick early."""
    program = one_neuron_program()
    early = EmulatorBackend(warn_saturation=False).run_spikes(
        dataclasses.replace(program, delay=0), recorded_input(trace), record_trains=True
    )
    assert not np.array_equal(np.flatnonzero(early.spike_trains[-1][1:, 0, 0]), np.flatnonzero(trace[:, 2]))
