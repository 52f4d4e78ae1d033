"""Hostile NIR graphs and files: the reader returns a valid program or raises NIRError, nothing else (issue 27)."""

import copy
import warnings

import h5py
import nir
import numpy as np
import pytest

from spiking_dqn.export import to_nir, write_nir
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.nir_format import DIGEST_KEY, NIRError
from spiking_dqn.nir_read import from_nir, read_nir
from tests.test_nir import random_program

JUNK = [np.nan, np.inf, -np.inf, -1, 0, 0.5, 10.9, 1e300, 2**70, -(2**70), "x", b"\xff", True, None,
        np.array([1, 2]), np.array([]), np.array([[1.0]]), np.array([np.nan, 1.0]), [1, "a"], {"a": 1},
        np.array(["a", "b"]), np.zeros((3, 3)), 3, 8, 1e-3]
FILE_JUNK = [np.nan, np.inf, -1, 0, 0.5, 10.9, 1e300, 2**62, "x", True, np.array([1, 2]), np.array([], np.float32),
             np.array([[1.0]]), np.array([np.nan, 1.0]), np.zeros((3, 3, 3)), np.array([1 + 2j]), 3, 1e-3]


def _graph(seed: int) -> tuple[ChipProgram, nir.NIRGraph]:
    program = random_program(np.random.default_rng(seed), "zero" if seed % 2 else "subtract")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return program, to_nir(program, readout="lif" if seed % 3 == 0 else "if")


def _read(call, *args, **kwargs):
    """The call's program, or None where it raised NIRError; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = call(*args, **kwargs)
        except NIRError as exc:
            assert "\n" not in str(exc)
            return None
    assert isinstance(program, ChipProgram)
    return program


def _mutate_graph(graph: nir.NIRGraph, rng: np.random.Generator) -> None:
    if rng.random() < 0.5:
        graph.metadata.pop(DIGEST_KEY, None)
    for _ in range(int(rng.integers(1, 3))):
        junk = JUNK[int(rng.integers(len(JUNK)))]
        if rng.random() < 0.5:
            key = sorted(graph.metadata)[int(rng.integers(len(graph.metadata)))]
            if rng.random() < 0.2:
                del graph.metadata[key]
            else:
                graph.metadata[key] = junk
        else:
            node = graph.nodes[sorted(graph.nodes)[int(rng.integers(len(graph.nodes)))]]
            fields = [f for f in vars(node) if f not in ("input_type", "output_type", "metadata")]
            if fields:
                setattr(node, fields[int(rng.integers(len(fields)))], copy.deepcopy(junk))


def test_fuzz_mutated_graphs():
    rng = np.random.default_rng(2027)
    bases = [_graph(seed) for seed in range(4)]
    loaded = 0
    for case in range(300):
        program, base = bases[case % len(bases)]
        graph = copy.deepcopy(base)
        _mutate_graph(graph, rng)
        back = _read(from_nir, graph, dt=1e-3 if case % 5 == 0 else None)
        loaded += back is not None
    assert loaded < 300


def _mutate_file(path, rng: np.random.Generator) -> None:
    if rng.random() < 0.3:  # raw damage: flips or a truncation
        data = bytearray(path.read_bytes())
        if rng.random() < 0.5:
            del data[int(rng.integers(len(data))):]
        else:
            for position in rng.integers(0, len(data), 8):
                data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    with h5py.File(path, "r+") as f:
        names: list[str] = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = names[int(rng.integers(len(names)))]
        del f[name]
        if rng.random() < 0.85:
            f[name] = FILE_JUNK[int(rng.integers(len(FILE_JUNK)))]
        if rng.random() < 0.5 and "node/metadata/digest" in f:
            del f["node/metadata/digest"]


def test_fuzz_mutated_files(tmp_path):
    rng = np.random.default_rng(27)
    original = tmp_path / "original.nir"
    program = random_program(np.random.default_rng(5), "zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_nir(program, original)
    path = tmp_path / "mutated.nir"
    for case in range(200):
        path.write_bytes(original.read_bytes())
        _mutate_file(path, rng)
        _read(read_nir, path, dt=1e-3 if case % 4 == 0 else None)


def _hand_graph(weight, metadata=None) -> nir.NIRGraph:
    n_out, n_in = weight.shape
    nodes = {
        "input": nir.Input(input_type=np.array([n_in])),
        "affine": nir.Affine(weight=weight, bias=np.zeros(n_out)),
        "if": nir.IF(r=np.full(n_out, 1e3), v_threshold=np.full(n_out, 5.0), v_reset=np.zeros(n_out)),
        "output": nir.Output(output_type=np.array([n_out])),
    }
    edges = [("input", "affine"), ("affine", "if"), ("if", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {})


def test_nan_and_infinite_weights_are_refused():
    for bad in (np.nan, np.inf):
        weight = np.ones((2, 4))
        weight[1, 2] = bad
        with pytest.raises(NIRError, match="non-finite"):
            from_nir(_hand_graph(weight), dt=1e-3)


@pytest.mark.parametrize("key, value", [("delay", 0.5), ("ticks", 10.9), ("ticks", np.inf), ("seed", 1.5)])
def test_non_integer_settings_are_refused(key, value):
    _, graph = _graph(1)
    del graph.metadata[DIGEST_KEY]
    graph.metadata[key] = value
    with pytest.raises(NIRError, match=f"{key} must be an integer"):
        from_nir(graph)


@pytest.mark.parametrize("key, value", [("ticks", 2**70), ("v_reset", "x"), ("weight_bits", "x"), ("dt", "x")])
def test_metadata_that_does_not_convert_is_a_nir_error(key, value):
    _, graph = _graph(1)
    del graph.metadata[DIGEST_KEY]
    graph.metadata[key] = value
    with pytest.raises(NIRError):
        from_nir(graph)


@pytest.fixture
def nir_file(tmp_path):
    program = random_program(np.random.default_rng(6), "zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_nir(program, tmp_path / "p.nir")


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_are_not_followed(nir_file, tmp_path, kind):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["weight"] = np.ones((9, 6), np.float32)
    with h5py.File(nir_file, "r+") as f:
        del f["node/nodes/affine_0/weight"]
        f["node/nodes/affine_0/weight"] = (
            h5py.ExternalLink(str(other), "weight") if kind == "external" else h5py.SoftLink("/node/nodes/affine_1/bias")
        )
    with pytest.raises(NIRError, match="link"):
        read_nir(nir_file)


def test_a_huge_affine_is_refused_before_it_is_read(nir_file, monkeypatch):
    with h5py.File(nir_file, "r+") as f:
        del f["node/nodes/affine_0/weight"]
        f.create_dataset("node/nodes/affine_0/weight", shape=(6000, 6000), dtype=np.float32, compression="gzip")
    monkeypatch.setattr(nir, "read", lambda path: pytest.fail("the file was read"))
    with pytest.raises(NIRError, match="MAX_PROJECTION_WEIGHTS"):
        read_nir(nir_file)
