"""NIR export/import of chip programs: exact round trips, hand-made graphs, bad input."""

import dataclasses
import warnings
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

from spiking_dqn.export import to_nir, write_nir
from spiking_dqn.nir_format import METADATA_KEYS, NIRError
from spiking_dqn.nir_read import from_nir, read_nir
from spiking_dqn.hardware.emulator import EmulatorBackend
from spiking_dqn.hardware.program import ChipProgram

AGENTS = Path(__file__).resolve().parents[1] / "agents" / "trained"
SHIPPED = ["CartPole-v0", "Acrobot-v1"]


def random_program(rng: np.random.Generator, reset: str, sizes=(6, 9, 7, 3), weight_bits=None) -> ChipProgram:
    """A random program: per-neuron thresholds, decays and offsets, integrator readout."""
    n = len(sizes) - 1
    bits = [8] * n if weight_bits is None else weight_bits
    weights = [rng.integers(-(2 ** (b - 1) - 1), 2 ** (b - 1), size=(sizes[k + 1], sizes[k])).astype(np.int8)
               for k, b in enumerate(bits)]
    thresholds = [rng.uniform(5, 200, sizes[k + 1]).astype(np.float32) for k in range(n - 1)]
    alphas = [rng.uniform(0.0, 0.999, sizes[k + 1]).astype(np.float32) for k in range(n - 1)]
    return ChipProgram(
        weights=weights,
        thresholds=thresholds + [np.full(sizes[-1], 5000, np.float32)],
        alpha_decay=alphas + [np.ones(sizes[-1], np.float32)],
        i_offset=[rng.normal(0, 20, s).astype(np.float32) for s in sizes[1:]],
        obs_bound=rng.uniform(0.5, 3, sizes[0] // 2).astype(np.float32),
        reset=reset, v_reset=float(rng.normal()) if reset == "zero" else 0.0,
        ticks=int(rng.integers(3, 25)), lambdas=list(rng.uniform(1, 100, n)), seed=int(rng.integers(0, 99)),
        weight_bits=weight_bits,
    )


def quiet_to_nir(program, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_nir(program, **kwargs)


def assert_same_run(a: ChipProgram, b: ChipProgram, obs: np.ndarray) -> None:
    ra = EmulatorBackend().run(a, obs, record_voltages=True)
    rb = EmulatorBackend().run(b, obs, record_voltages=True)
    np.testing.assert_array_equal(ra.voltages, rb.voltages)
    np.testing.assert_array_equal(ra.voltage_trace, rb.voltage_trace)
    np.testing.assert_array_equal(ra.actions, rb.actions)
    for ca, cb in zip(ra.spike_counts, rb.spike_counts):
        np.testing.assert_array_equal(ca, cb)


@pytest.mark.parametrize("env_id", SHIPPED)
def test_shipped_program_round_trip(env_id, tmp_path):
    program = ChipProgram.load(AGENTS / env_id / "chip_program.npz")
    with pytest.warns(UserWarning, match="subtract"):
        graph = to_nir(program)
    assert from_nir(graph) == program
    kinds = [type(graph.nodes[k]).__name__ for k in graph.nodes]
    assert kinds.count("LIF") == len(program.weights) - 1 and kinds.count("IF") == 1
    assert set(graph.metadata) == set(METADATA_KEYS) and graph.metadata["reset"] == "subtract"
    path = tmp_path / "agent.nir"
    with pytest.warns(UserWarning):
        write_nir(program, path)
    back = read_nir(path)
    assert back == program
    obs = np.random.default_rng(0).uniform(-2, 2, size=(16, program.obs_dim)).astype(np.float32)
    assert_same_run(program, back, obs)


@pytest.mark.parametrize("seed", range(6))
def test_random_program_round_trip(seed, tmp_path):
    rng = np.random.default_rng(seed)
    program = random_program(rng, "subtract" if seed % 2 else "zero", weight_bits=[8, 5, 2] if seed > 3 else None)
    graph = quiet_to_nir(program)
    assert from_nir(graph) == program
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_nir(program, tmp_path / "p.nir")
    back = read_nir(tmp_path / "p.nir")
    assert back == program
    assert_same_run(program, back, rng.uniform(-3, 3, size=(8, program.obs_dim)).astype(np.float32))


def test_exported_parameters_reproduce_the_chip_update():
    program = random_program(np.random.default_rng(7), "zero")
    graph = to_nir(program, dt=2e-3)
    lif, readout = graph.nodes["lif_0"], graph.nodes["if_2"]
    # forward Euler: alpha = 1 - dt / tau, r = 1, input factor f = dt / tau, thresholds f times the chip's
    np.testing.assert_array_equal((1 - 2e-3 / lif.tau).astype(np.float32), program.alpha_decay[0])
    assert np.all(lif.r == 1) and np.all(lif.v_leak == 0)
    np.testing.assert_allclose(lif.v_threshold, program.thresholds[0] * (2e-3 / lif.tau), rtol=1e-15)
    np.testing.assert_array_equal(graph.nodes["affine_0"].bias, program.i_offset[0])
    np.testing.assert_array_equal(readout.v_threshold, np.full(3, 5000, np.float32))
    np.testing.assert_allclose(2e-3 * readout.r, np.ones(3), rtol=1e-15)
    assert graph.metadata["dt"] == 2e-3 and from_nir(graph) == program


def hand_graph(dt: float = 1e-3, delays: bool = False, **changes) -> tuple[nir.NIRGraph, dict]:
    """4 inputs -> Affine -> LIF(3) -> Affine -> IF(2) -> Output, made with nir directly (no dt in the graph).

    :param dt: the tick of the one-tick Delay nodes (``delays=True``: one before each Affine)
    :param changes: parameters replaced (e.g. ``r2``)
    """
    p = {
        "w1": np.array([[1.0, 2, 0, -1], [0, 1, 1, 1], [3, -2, 1, 0]]), "b1": np.array([0.25, 0.0, -0.5]),
        "tau": np.array([4e-3, 10e-3, 2e-3]), "r": np.array([2.0, 5.0, 1.0]), "v_leak": np.array([0.0, 0.5, 0.0]),
        "thr1": np.array([0.5, 1.0, 1.5]), "w2": np.array([[1.0, -1, 2], [0, 3, -1]]), "b2": np.array([0.0, 0.125]),
        "r2": np.array([1000.0, 1000.0]), "thr2": np.array([5000.0, 5000.0]), **changes,
    }
    nodes = {
        "in": nir.Input(input_type=np.array([4])),
        "fc1": nir.Affine(weight=p["w1"], bias=p["b1"]),
        "lif": nir.LIF(tau=p["tau"], r=p["r"], v_leak=p["v_leak"], v_threshold=p["thr1"], v_reset=np.zeros(3)),
        "fc2": nir.Affine(weight=p["w2"], bias=p["b2"]),
        "acc": nir.IF(r=p["r2"], v_threshold=p["thr2"], v_reset=np.zeros(2)),
        "out": nir.Output(output_type=np.array([2])),
    }
    edges = [("in", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "acc"), ("acc", "out")]
    if delays:
        nodes["d1"], nodes["d2"] = nir.Delay(delay=np.full(4, dt)), nir.Delay(delay=np.full(3, dt))
        edges = [("in", "d1"), ("d1", "fc1"), ("fc1", "lif"), ("lif", "d2"), ("d2", "fc2"), ("fc2", "acc"),
                 ("acc", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges), p


def reference_run(p: dict, spikes: np.ndarray, dt: float, scale: float, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """NIR's ODEs by forward Euler at ``dt``, in chip units (v_chip = scale * v_nir / factor), reset to 0.

    ``delay`` 1: each projection carries the spikes of the tick before (Delay nodes); 0: of this tick.
    """
    f1 = dt / p["tau"] * p["r"]
    f2 = dt * p["r2"]
    v1, v2 = np.zeros(3), np.zeros(2)
    prev_in, prev_hidden = np.zeros(4), np.zeros(3)
    hidden_count = np.zeros(3, dtype=int)
    for t in range(spikes.shape[0]):
        # LIF: tau dv/dt = (v_leak - v) + r I;  IF: dv/dt = r I;  I = W x + b
        x_in = prev_in if delay else spikes[t]
        nir_v1 = v1 * f1 / scale
        nir_v1 = nir_v1 + dt / p["tau"] * (p["v_leak"] - nir_v1) + f1 * (p["w1"] @ x_in + p["b1"])
        fired = nir_v1 > p["thr1"]
        nir_v1[fired] = 0.0
        v1 = scale * nir_v1 / f1
        x_hidden = prev_hidden if delay else fired.astype(float)
        nir_v2 = v2 * f2 / scale + f2 * (p["w2"] @ x_hidden + p["b2"])
        v2 = scale * nir_v2 / f2
        hidden_count += fired
        prev_in, prev_hidden = spikes[t], fired.astype(float)
    return v2, hidden_count


def assert_runs_as_reference(program: ChipProgram, p: dict, dt: float, scale: float, delay: int) -> None:
    """The emulator runs ``program`` on random spike trains as :func:`reference_run` runs the graph's ODEs."""
    spikes = np.random.default_rng(3).random((program.ticks, 5, 4)) < 0.6
    result = EmulatorBackend().run_spikes(program, spikes)
    for b in range(5):
        v2, hidden_count = reference_run(p, spikes[:, b].astype(float), dt, scale, delay)
        np.testing.assert_allclose(result.voltages[b], v2, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(result.spike_counts[1][b], hidden_count)
    assert np.all(result.spike_counts[1].sum(axis=0) > 0)  # the hidden layer did spike


@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("delays", [False, True])
def test_hand_made_graph_runs_as_its_dynamics(scale, delays, tmp_path):
    graph, p = hand_graph(delays=delays)
    program = from_nir(graph, dt=1e-3, weight_scale=scale, ticks=12)
    assert program.reset == "zero" and program.delay == int(delays) and program.layer_sizes == [4, 3, 2]
    np.testing.assert_array_equal(program.weights[0], (scale * p["w1"]).astype(np.int8))
    np.testing.assert_allclose(program.alpha_decay[0], 1 - 1e-3 / p["tau"], rtol=1e-6)
    nir.write(tmp_path / "hand.nir", graph)
    assert read_nir(tmp_path / "hand.nir", dt=1e-3, weight_scale=scale, ticks=12) == program
    assert_runs_as_reference(program, p, 1e-3, scale, int(delays))


def test_graph_without_dt_needs_one():
    graph, _ = hand_graph()
    with pytest.raises(NIRError, match=r"carries no dt.*dt=\.\.\..*snnTorch"):
        from_nir(graph)


def test_snntorch_style_graph_imports_exactly_at_its_dt():
    """snnTorch 1.0 writes Leaky(beta) as LIF(tau = dt / (1 - beta), r = tau / dt) at dt = 1e-4, and no dt."""
    dt, beta = 1e-4, 0.95
    tau = np.full(3, dt / (1 - beta))
    graph, p = hand_graph(tau=tau, r=tau / dt, v_leak=np.zeros(3), r2=np.ones(2), thr2=np.full(2, 0.5))
    with pytest.warns(UserWarning, match="IF node with r = 1"):
        program = from_nir(graph, dt=dt, ticks=12)
    np.testing.assert_array_equal(program.alpha_decay[0], np.float32(beta))  # not 0.5 (1 ms)
    np.testing.assert_allclose(program.thresholds[0], p["thr1"], rtol=1e-6)  # not divided by 10
    np.testing.assert_allclose(program.thresholds[1], 0.5 / dt, rtol=1e-6)  # IF: dt * r * I per tick
    assert_runs_as_reference(program, p, dt, 1.0, 0)


@pytest.mark.parametrize("r2", [1.0, 0.37, 2500.0])
def test_if_nodes_import_exactly_for_any_r(r2):
    graph, p = hand_graph(r2=np.full(2, r2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # r = 1's reading
        program = from_nir(graph, dt=1e-3, ticks=12)
    np.testing.assert_allclose(program.thresholds[1], 5000.0 / (1e-3 * r2), rtol=1e-6)
    assert_runs_as_reference(program, p, 1e-3, 1.0, 0)


def test_delay_nodes_must_be_one_tick_before_every_projection():
    graph, _ = hand_graph(delays=True, dt=2e-3)
    with pytest.raises(NIRError, match="not one tick"):
        from_nir(graph, dt=1e-3)
    graph, _ = hand_graph(delays=True)
    graph.edges = [e for e in graph.edges if e not in (("lif", "d2"), ("d2", "fc2"))] + [("lif", "fc2")]
    del graph.nodes["d2"]
    with pytest.raises(NIRError, match="precedes each Affine"):
        from_nir(graph, dt=1e-3)
    graph = to_nir(random_program(np.random.default_rng(4), "zero"))
    graph.metadata["delay"] = 0
    with pytest.raises(NIRError, match="metadata says delay 0"):
        from_nir(graph)


@pytest.mark.parametrize("dt", [1e-4, 1e-3, 0.05])
def test_lif_readout_round_trips_with_a_decay_of_exactly_one(dt, tmp_path):
    program = ChipProgram.load(AGENTS / "CartPole-v0" / "chip_program.npz")
    graph = quiet_to_nir(program, dt=dt, readout="lif")
    readout = graph.nodes[f"lif_{len(program.weights) - 1}"]
    assert not any(isinstance(node, nir.IF) for node in graph.nodes.values())
    assert np.all(1.0 - 1e-4 / readout.tau == 1.0) and np.all(1.0 - dt / readout.tau == 1.0)  # snnTorch's beta, ours
    np.testing.assert_array_equal(dt / readout.tau * readout.r, 1.0)
    assert from_nir(graph) == program
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_nir(program, tmp_path / "p.nir", dt=dt, readout="lif")
    assert read_nir(tmp_path / "p.nir") == program
    with pytest.raises(ValueError, match="readout"):
        to_nir(program, readout="iaf")


def test_exported_graph_holds_the_delay_as_delay_nodes():
    program = random_program(np.random.default_rng(2), "zero")
    graph = to_nir(program)
    assert [type(graph.nodes[f"delay_{k}"]).__name__ for k in range(3)] == ["Delay"] * 3
    np.testing.assert_array_equal(graph.nodes["delay_0"].delay, np.full(6, 1e-3))
    undelayed = dataclasses.replace(program, delay=0, v_reset=0.0)
    graph = to_nir(undelayed)
    assert not any(isinstance(node, nir.Delay) for node in graph.nodes.values())
    graph.metadata = {}  # as a foreign reader sees it: no metadata, no Delay nodes, delay 0
    assert from_nir(graph, dt=1e-3, ticks=program.ticks).delay == 0


def test_foreign_graph_options_and_rounding():
    graph, _ = hand_graph()
    with pytest.warns(UserWarning, match="rounded"):
        program = from_nir(graph, dt=1e-3, weight_scale=1.3)
    assert program.weights[0][2, 0] == np.rint(3 * 1.3)
    with pytest.raises(NIRError, match=r"beyond \[-127, 127\] at 8-bit"):
        from_nir(graph, dt=1e-3, weight_scale=50.0)
    with pytest.raises(NIRError, match=r"beyond \[-1, 1\] at 2-bit"):
        from_nir(graph, dt=1e-3, weight_bits=2)
    assert from_nir(graph, dt=1e-3, weight_bits=[3, 3]).weight_bits == [3, 3]
    assert from_nir(graph, dt=1e-3, reset="subtract", delay=0, obs_bound=[2.0, 3.0]).obs_bound.tolist() == [2.0, 3.0]
    with pytest.raises(NIRError, match="reset"):
        from_nir(graph, dt=1e-3, reset="bounce")


# ---------------------------------------------------------------------- bad input


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_nir(tmp_path / "nothing.nir")


def test_read_truncated_and_foreign_files(tmp_path):
    program = ChipProgram.load(AGENTS / "CartPole-v0" / "chip_program.npz")
    good = tmp_path / "good.nir"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_nir(program, good)
    data = good.read_bytes()
    (tmp_path / "cut.nir").write_bytes(data[: len(data) // 2])
    with pytest.raises(NIRError, match="not a readable NIR file"):
        read_nir(tmp_path / "cut.nir")
    with pytest.raises(NIRError, match="not a readable NIR file"):
        read_nir(AGENTS / "CartPole-v0" / "chip_program.npz")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(NIRError, match="not a readable NIR file"):
        read_nir(tmp_path / "other.h5")


def test_unsupported_nodes_named():
    graph, _ = hand_graph()
    graph.nodes["lif"] = nir.CubaLIF(
        tau_syn=np.ones(3), tau_mem=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)
    )
    with pytest.raises(NIRError, match=r"unsupported NIR node types: lif \(CubaLIF\)"):
        from_nir(graph, dt=1e-3)


def test_cycle_and_branch_refused():
    graph, _ = hand_graph()
    graph.edges.append(("acc", "fc2"))
    with pytest.raises(NIRError, match="outgoing edges|cycle"):
        from_nir(graph, dt=1e-3)
    graph, _ = hand_graph()
    graph.edges[-1] = ("acc", "fc1")
    graph.edges.append(("lif", "out"))
    with pytest.raises(NIRError, match="cycle|outgoing"):
        from_nir(graph, dt=1e-3)


def test_mismatched_sizes_refused():
    graph, _ = hand_graph()
    graph.nodes["fc2"] = nir.Affine(weight=np.ones((2, 5)), bias=np.zeros(2))
    with pytest.raises(NIRError, match="does not take the 3 outputs"):
        from_nir(graph, dt=1e-3)
    graph, _ = hand_graph()
    graph.nodes["out"] = nir.Output(output_type=np.array([3]))
    with pytest.raises(NIRError, match="Output node has 3"):
        from_nir(graph, dt=1e-3)


def test_mixed_decay_population_refused_on_export():
    program = random_program(np.random.default_rng(1), "zero")
    alphas = [a.copy() for a in program.alpha_decay]
    alphas[0][0] = 1.0
    mixed = ChipProgram(**{**{f: getattr(program, f) for f in (
        "weights", "thresholds", "i_offset", "obs_bound", "reset", "v_reset", "ticks", "lambdas")},
        "alpha_decay": alphas})
    with pytest.raises(NIRError, match="mixes alpha_decay 1"):
        to_nir(mixed)


def test_not_a_graph():
    with pytest.raises(NIRError, match="expects a nir.NIRGraph"):
        from_nir(nir.LIF(tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.ones(1)))


def lif_norse_graph() -> nir.NIRGraph:
    """The shape of the NIR paper's ``lif_norse.nir``: one input, Affine 1x1, one LIF (tau 2.5 ms, r 1, thr 0.1)."""
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([1])),
            "affine": nir.Affine(weight=np.array([[1.0]]), bias=np.zeros(1)),
            "lif": nir.LIF(tau=np.array([2.5e-3]), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.array([0.1]),
                           v_reset=np.zeros(1)),
            "output": nir.Output(output_type=np.array([1])),
        },
        edges=[("input", "affine"), ("affine", "lif"), ("lif", "output")],
    )


def test_spike_driven_graph_imports_without_an_observation_encoder(tmp_path):
    graph = lif_norse_graph()
    with pytest.raises(NIRError, match="inputs='spikes'"):
        from_nir(graph, dt=1e-3)
    with pytest.raises(NIRError, match="one of them"):
        from_nir(graph, dt=1e-3, inputs="spikes", obs_bound=[1.0])
    program = from_nir(graph, dt=1e-3, inputs="spikes", ticks=40)
    assert program.obs_bound is None and program.layer_sizes == [1, 1] and program.delay == 0
    spikes = np.random.default_rng(5).random((40, 3, 1)) < 0.3
    result = EmulatorBackend().run_spikes(program, spikes, record_voltages=True)
    # NIR's LIF by forward Euler at dt: v += dt / tau (-v + r (W x)); spike above 0.1, reset to 0
    f = 1e-3 / 2.5e-3
    for b in range(3):
        v, count = 0.0, 0
        for t in range(40):
            v = v + f * (-v + 1.0 * spikes[t, b, 0])
            if v > 0.1:
                v, count = 0.0, count + 1
        assert result.spike_counts[1][b, 0] == count
        np.testing.assert_allclose(result.voltages[b, 0] * f, v, rtol=1e-5, atol=1e-6)  # chip units = NIR / f
    with pytest.raises(ValueError, match="no observation encoder.*run_spikes"):
        EmulatorBackend().run(program, np.zeros((1, 1), np.float32))
    with pytest.raises(ValueError, match="saved as NIR"):
        program.save(tmp_path / "p.npz")
    write_nir(program, tmp_path / "p.nir")
    assert read_nir(tmp_path / "p.nir") == program  # the graph says it has no encoder
