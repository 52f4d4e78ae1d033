"""The Brian2 backend: an independent executor that must agree with the emulator spike for spike."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spiking_dqn.hardware import BACKENDS, ChipProgram, EmulatorBackend, get_backend

pytest.importorskip("brian2")

from spiking_dqn.hardware.brian2 import Brian2Backend  # noqa: E402  (after the skip)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "agents" / "trained").glob("*/chip_program.npz"))


def random_program(reset: str, seed: int, sizes=(6, 9, 7, 3), ticks: int = 12, out_threshold: float = 5000.0):
    """A program with per-neuron thresholds, decays and offsets drawn at random."""
    rng = np.random.default_rng(seed)
    pops = sizes[1:]
    return ChipProgram(
        weights=[rng.integers(-60, 90, size=(n_post, n_pre)).astype(np.int8) for n_pre, n_post in zip(sizes, pops)],
        thresholds=[rng.uniform(30.0, 120.0, n).astype(np.float32) for n in pops[:-1]]
        + [np.full(pops[-1], out_threshold, np.float32)],
        alpha_decay=[rng.uniform(0.5, 1.0, n).astype(np.float32) for n in pops[:-1]] + [np.ones(pops[-1], np.float32)],
        i_offset=[rng.normal(0.0, 3.0, n).astype(np.float32) for n in pops],
        obs_bound=np.full(sizes[0] // 2, 1.5, np.float32),
        reset=reset,
        v_reset=-7.25 if reset == "zero" else 0.0,
        ticks=ticks,
        delay=1,
    )


def observations(program: ChipProgram, n: int, seed: int) -> np.ndarray:
    bound = program.obs_bound
    return np.random.default_rng(seed).uniform(-1.2 * bound, 1.2 * bound, size=(n, bound.size)).astype(np.float32)


def assert_same_result(got, want):
    np.testing.assert_array_equal(got.actions, want.actions)
    for a, b in zip(got.spike_counts, want.spike_counts, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(got.voltages, want.voltages, rtol=1e-6, atol=1e-5)  # float32 tolerance
    np.testing.assert_array_equal(got.synaptic_events, want.synaptic_events)
    np.testing.assert_array_equal(got.output_saturated, want.output_saturated)
    assert got.voltages.dtype == np.float32 and got.actions.dtype == np.int64
    if want.spike_trains is not None:
        for a, b in zip(got.spike_trains, want.spike_trains, strict=True):
            assert a.dtype == np.bool_
            np.testing.assert_array_equal(a, b)
    if want.voltage_trace is not None:
        np.testing.assert_allclose(got.voltage_trace, want.voltage_trace, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_programs_agree_with_the_emulator(reset, seed):
    program = random_program(reset, seed)
    obs = observations(program, 5, seed)
    got = Brian2Backend(chunk=3).run(program, obs, record_trains=True, record_voltages=True)  # 2 chunks
    want = EmulatorBackend().run(program, obs, record_trains=True, record_voltages=True)
    assert all(int(c.sum()) > 0 for c in want.spike_counts[1:-1]), "every hidden layer should spike"
    assert got.backend == "brian2" and got.ticks == program.ticks and got.wall_time_s > 0
    assert_same_result(got, want)


def test_saturating_readout_agrees_and_is_reported():
    program = random_program("subtract", 2, out_threshold=40.0)
    obs = observations(program, 4, 2)
    with pytest.warns(UserWarning, match="threshold"):
        got = Brian2Backend().run(program, obs)
    want = EmulatorBackend(warn_saturation=False).run(program, obs)
    assert want.output_saturated.any()
    assert_same_result(got, want)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_programs_agree_with_the_emulator(path):
    program = ChipProgram.load(path)
    obs = observations(program, 4, 3)
    got = Brian2Backend().run(program, obs, record_voltages=True)
    want = EmulatorBackend().run(program, obs, record_voltages=True)
    assert all(int(c.sum()) > 0 for c in want.spike_counts[1:-1])
    assert_same_result(got, want)


def test_both_shipped_programs_are_checked():
    assert [p.parent.name for p in SHIPPED] == ["Acrobot-v1", "CartPole-v0", "CartPole-v1", "LunarLander-v3", "MountainCar-v0"]


def test_network_is_built_once_and_reset_between_runs():
    program = random_program("subtract", 4)
    backend = Brian2Backend()
    obs = observations(program, 3, 4)
    first = backend.run(program, obs)
    built = backend._built[3]
    other = backend.run(program, observations(program, 3, 5))
    again = backend.run(program, obs)
    assert backend._built[3] is built  # the same Brian2 network, restored
    assert_same_result(again, first)  # nothing carried over from the run in between
    assert not np.array_equal(other.voltages, first.voltages)
    backend.run(random_program("subtract", 5), obs)
    assert backend._built[3] is not built  # a new program, a new network


def test_delay_0_program_is_refused():
    program = dataclasses.replace(random_program("subtract", 0), delay=0)
    with pytest.raises(ValueError, match="delay=0.*emulator"):
        Brian2Backend().run(program, observations(program, 1, 0))


def test_registered_and_built_by_name():
    assert "brian2" in BACKENDS and BACKENDS["brian2"] is Brian2Backend
    backend = get_backend("brian2", chunk=4)
    assert isinstance(backend, Brian2Backend) and backend.chunk == 4 and backend.name == "brian2"
    with pytest.raises(ValueError, match="chunk"):
        Brian2Backend(chunk=0)


def test_missing_brian2_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "brian2", None)  # makes `import brian2` fail
    program = random_program("subtract", 0)
    backend = get_backend("brian2")  # constructing needs no import
    with pytest.raises(ImportError, match=r"pip install 'spiking-dqn\[brian2\]'"):
        backend.run(program, observations(program, 1, 0))


def test_importing_the_backend_does_not_import_brian2():
    code = (
        "import sys, spiking_dqn.hardware, spiking_dqn.hardware.brian2\n"
        "from spiking_dqn.hardware import BACKENDS; BACKENDS['brian2']\n"
        "assert 'brian2' not in sys.modules, 'imported brian2 at import time'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=300)


def test_cli_backend_choices_come_from_the_registry():
    from spiking_dqn.cli import build_parser

    parser = build_parser()
    for command in ("compare", "search", "calibrate"):
        assert parser.parse_args([command, "m.zip", "--backend", "brian2"]).backend == "brian2"


@pytest.mark.slow
def test_compare_on_brian2_plays_like_the_emulator(tmp_path):
    """``spiking-dqn compare --backend brian2 --episodes 1``: 200 steps of CartPole-v0, one Brian2 run each.

    One episode keeps it to about 90 s on one core; the equality of the two executors on
    many programs and observations is checked by the faster tests above.
    """
    import json

    from spiking_dqn.cli import main

    model = ROOT / "agents" / "trained" / "CartPole-v0" / "model.zip"
    reports = {}
    for backend in ("brian2", "emulator"):
        out = tmp_path / backend
        argv = ["compare", str(model), "--backend", backend, "--episodes", "1", "--no-progress", "--out", str(out)]
        assert main(argv) == 0
        reports[backend] = json.loads((out / "report.json").read_text())
    assert reports["brian2"]["backend"] == "brian2" and reports["brian2"]["n_episodes"] == 1
    assert reports["brian2"]["reward"]["episodes"]["chip"] == reports["emulator"]["reward"]["episodes"]["chip"]
    assert reports["brian2"]["action_agreement"] == reports["emulator"]["action_agreement"]
