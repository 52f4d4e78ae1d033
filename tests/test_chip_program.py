"""ChipProgram: validation, save/load round trip, and clear errors for bad files."""

import dataclasses
import json

import numpy as np
import pytest

from spiking_dqn.hardware import ChipProgram, ChipProgramError
from spiking_dqn.hardware.program_fields import MAX_POPULATION_NEURONS, MAX_PROJECTIONS, MAX_TICKS
from spiking_dqn.hardware.program_file import FORMAT_VERSION


def make_program(**overrides) -> ChipProgram:
    rng = np.random.default_rng(0)
    sizes = [6, 5, 4, 2]  # obs_dim 3 -> 6 input neurons, hidden 5 and 4, 2 actions
    fields = dict(
        weights=[
            rng.integers(-127, 128, size=(n_post, n_pre)).astype(np.int8)
            for n_pre, n_post in zip(sizes[:-1], sizes[1:])
        ],
        thresholds=[np.full(5, 10.0, np.float32), np.full(4, 12.5, np.float32), np.full(2, 5000.0, np.float32)],
        alpha_decay=[np.full(5, 0.9, np.float32), np.full(4, 0.8, np.float32), np.ones(2, np.float32)],
        i_offset=[
            rng.normal(size=5).astype(np.float32),
            rng.normal(size=4).astype(np.float32),
            np.zeros(2, np.float32),
        ],
        obs_bound=np.array([2.4, 3.0, 0.21], dtype=np.float32),
        reset="subtract",
        v_reset=0.0,
        ticks=10,
        delay=1,
        encoding="deterministic",
        seed=3,
        lambdas=[20.0, 10.0, 40.0],
    )
    fields.update(overrides)
    return ChipProgram(**fields)


def saved_arrays(program: ChipProgram, tmp_path) -> dict:
    path = program.save(tmp_path / "source.npz")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def write_npz(path, arrays: dict):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


# ---------------------------------------------------------------------- construction


def test_properties():
    program = make_program()
    assert program.obs_dim == 3
    assert program.n_actions == 2
    assert program.layer_sizes == [6, 5, 4, 2]


def test_program_is_frozen_with_read_only_arrays():
    program = make_program()
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.ticks = 3
    with pytest.raises(ValueError):
        program.weights[0][0, 0] = 1
    with pytest.raises(ValueError):
        program.thresholds[0][0] = 1.0


def test_parameters_are_stored_as_float32_copies():
    thresholds = [np.full(5, 10.0), np.full(4, 12.5), np.full(2, 5000.0)]  # float64 in
    program = make_program(thresholds=thresholds)
    assert all(t.dtype == np.float32 for t in program.thresholds)
    thresholds[0][0] = 99.0
    assert program.thresholds[0][0] == 10.0


def test_lambdas_default_to_one():
    assert make_program(lambdas=[]).lambdas == [1.0, 1.0, 1.0]


def _weights(dtype=np.int8, value=1):
    return [np.full((5, 6), value).astype(dtype), np.ones((4, 5), np.int8), np.ones((2, 4), np.int8)]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(weights=_weights(np.float32)), "int8"),
        (dict(weights=_weights(np.int16)), "int8"),
        (dict(weights=_weights(np.int8, -128)), "-128"),
        (dict(weights=[np.ones((5, 6), np.int8), np.ones((4, 3), np.int8), np.ones((2, 4), np.int8)]), "chain"),
        (dict(weights=[np.ones((5, 8), np.int8), np.ones((4, 5), np.int8), np.ones((2, 4), np.int8)]), "input neurons"),
        (dict(weights=[]), "non-empty"),
        (dict(weights=[[1, 2]] * 3), "numpy int8"),
        (dict(thresholds=[np.full(5, 10.0), np.full(3, 12.5), np.full(2, 5000.0)]), "shape"),
        (dict(thresholds=[np.full(5, 10.0), np.full(4, 12.5)]), "one array per population"),
        (dict(thresholds=[np.full(5, 0.0), np.full(4, 12.5), np.full(2, 5000.0)]), "positive"),
        (dict(thresholds=[np.full(5, np.nan), np.full(4, 12.5), np.full(2, 5000.0)]), "NaN"),
        (dict(alpha_decay=[np.full(5, 1.5), np.full(4, 0.8), np.ones(2)]), r"\[0, 1\]"),
        (dict(i_offset=[np.full(5, np.inf), np.zeros(4), np.zeros(2)]), "infinite"),
        (dict(obs_bound=np.array([1.0, -1.0, 1.0])), "positive"),
        (dict(obs_bound=np.ones((3, 1))), "1-D"),
        (dict(reset="soft"), "reset"),
        (dict(v_reset=float("nan")), "v_reset"),
        (dict(ticks=0), "ticks"),
        (dict(ticks=2.5), "ticks"),
        (dict(ticks=True), "ticks"),
        (dict(delay=2), "delay"),
        (dict(encoding="rate"), "encoding"),
        (dict(seed=-1), "seed"),
        (dict(lambdas=[1.0, 2.0]), "lambdas"),
        (dict(lambdas=[1.0, 0.0, 2.0]), "lambdas"),
    ],
)
def test_invalid_programs_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_program(**overrides)


def test_with_thresholds():
    program = make_program()
    new = program.with_thresholds([7.0, np.arange(1, 5, dtype=np.float32), 5000.0])
    np.testing.assert_array_equal(new.thresholds[0], np.full(5, 7.0, np.float32))
    np.testing.assert_array_equal(new.thresholds[1], [1, 2, 3, 4])
    np.testing.assert_array_equal(program.thresholds[0], np.full(5, 10.0, np.float32))  # unchanged
    assert new.weights[0] is program.weights[0] or np.array_equal(new.weights[0], program.weights[0])
    with pytest.raises(ValueError):
        program.with_thresholds([7.0, 5000.0])
    with pytest.raises(ValueError):
        program.with_thresholds([-1.0, 1.0, 5000.0])


def test_equality():
    assert make_program() == make_program()
    assert make_program() != make_program(ticks=11)
    assert make_program() != make_program(thresholds=[np.full(5, 11.0), np.full(4, 12.5), np.full(2, 5000.0)])


# ---------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "overrides", [{}, dict(reset="zero", v_reset=-2.5, delay=0, encoding="poisson", seed=11, lambdas=[3.0, 3.0, 3.0])]
)
def test_save_load_round_trip(tmp_path, overrides):
    program = make_program(**overrides)
    path = program.save(tmp_path / "policy.chip")  # written at exactly this path
    assert path == tmp_path / "policy.chip" and path.is_file()
    loaded = ChipProgram.load(path)
    assert loaded == program
    assert all(w.dtype == np.int8 for w in loaded.weights)
    assert loaded.lambdas == program.lambdas and loaded.reset == program.reset
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickle needed
        meta = json.loads(str(data["metadata"][()]))
    assert meta["format"] == "spiking-dqn-chip-program" and meta["format_version"] == FORMAT_VERSION


def test_save_is_atomic_a_failing_writer_keeps_the_previous_file(tmp_path, monkeypatch):
    path = make_program().save(tmp_path / "policy.npz")
    before = path.read_bytes()
    original = np.savez

    def fail_midway(file, **arrays):  # writes part of an archive, then the disk fills
        original(file, **{name: arrays[name] for name in list(arrays)[:3]})
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="No space left"):
        make_program(ticks=20).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and ChipProgram.load(path) == make_program()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.npz"]  # no partial file left
    assert make_program(ticks=20).save(path) == path and ChipProgram.load(path).ticks == 20


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ChipProgram.load(tmp_path / "nope.npz")


def test_load_truncated_file(tmp_path):
    path = make_program().save(tmp_path / "p.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChipProgramError, match="truncated"):
        ChipProgram.load(path)


def test_load_garbage_file(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ChipProgramError, match="not a chip program"):
        ChipProgram.load(path)


def test_load_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    with pytest.raises(ChipProgramError, match="not an .npz"):
        ChipProgram.load(path)


def test_load_foreign_npz(tmp_path):
    path = write_npz(tmp_path / "foreign.npz", {"a": np.ones(3), "b": np.zeros(2)})
    with pytest.raises(ChipProgramError, match="not a spiking-dqn chip program"):
        ChipProgram.load(path)


def test_load_other_format_tag(tmp_path):
    arrays = saved_arrays(make_program(), tmp_path)
    arrays["metadata"] = np.array(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(ChipProgramError, match="something-else"):
        ChipProgram.load(write_npz(tmp_path / "other.npz", arrays))


def test_load_newer_format_version(tmp_path):
    arrays = saved_arrays(make_program(), tmp_path)
    meta = json.loads(str(arrays["metadata"][()]))
    meta["format_version"] = FORMAT_VERSION + 1
    arrays["metadata"] = np.array(json.dumps(meta))
    with pytest.raises(ChipProgramError, match="newer spiking-dqn.*upgrade"):
        ChipProgram.load(write_npz(tmp_path / "newer.npz", arrays))


def test_load_missing_arrays(tmp_path):
    arrays = saved_arrays(make_program(), tmp_path)
    del arrays["weights_1"], arrays["i_offset_2"]
    with pytest.raises(ChipProgramError, match="missing arrays.*weights_1"):
        ChipProgram.load(write_npz(tmp_path / "missing.npz", arrays))


@pytest.mark.parametrize(
    "name, array, match",
    [
        ("weights_0", np.ones((5, 6), np.float32), "int8"),
        ("weights_0", np.ones((5, 6), np.int16), "int8"),
        ("weights_1", np.full((4, 5), -128, np.int8), "-128"),
        ("weights_1", np.ones((4, 3), np.int8), "chain"),
        ("thresholds_0", np.full(5, -1.0, np.float32), "positive"),
    ],
)
def test_load_invalid_contents(tmp_path, name, array, match):
    arrays = saved_arrays(make_program(), tmp_path)
    arrays[name] = array
    with pytest.raises(ChipProgramError, match=match):
        ChipProgram.load(write_npz(tmp_path / "bad.npz", arrays))


def test_chip_program_error_is_a_value_error():
    assert issubclass(ChipProgramError, ValueError)


# ---------------------------------------------------------------------- size limits


def test_limits_are_documented_constants():
    from spiking_dqn.hardware import program_fields as program_module

    assert program_module.MAX_TICKS == 100_000
    assert program_module.MAX_POPULATION_NEURONS == 152 * 250
    assert make_program(ticks=MAX_TICKS).ticks == MAX_TICKS  # the limit itself is allowed


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(ticks=MAX_TICKS + 1), r"MAX_TICKS = 100000, got 100001"),
        (dict(ticks=10**9), r"MAX_TICKS"),
        (
            dict(
                weights=[
                    np.ones((MAX_POPULATION_NEURONS + 1, 6), np.int8),
                    np.ones((4, MAX_POPULATION_NEURONS + 1), np.int8),
                    np.ones((2, 4), np.int8),
                ],
                thresholds=[np.ones(MAX_POPULATION_NEURONS + 1), np.ones(4), np.ones(2)],
            ),
            "MAX_POPULATION_NEURONS",
        ),
        (
            dict(weights=[np.ones((5000, 6), np.int8), np.ones((4000, 5000), np.int8), np.ones((2, 4000), np.int8)]),
            "MAX_PROJECTION_WEIGHTS",
        ),
        (dict(weights=[np.ones((1, 6), np.int8)] + [np.ones((1, 1), np.int8)] * MAX_PROJECTIONS), "MAX_PROJECTIONS"),
    ],
)
def test_programs_over_the_size_limits_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_program(**overrides)


def test_load_refuses_a_file_claiming_a_billion_ticks(tmp_path):
    arrays = saved_arrays(make_program(), tmp_path)
    meta = json.loads(str(arrays["metadata"][()]))
    meta["ticks"] = 10**9
    arrays["metadata"] = np.array(json.dumps(meta))
    with pytest.raises(ChipProgramError, match=r"ticks = 1000000000, over the limit MAX_TICKS = 100000"):
        ChipProgram.load(write_npz(tmp_path / "long.npz", arrays))


def test_load_refuses_a_huge_n_projections_before_listing_arrays(tmp_path):
    arrays = saved_arrays(make_program(), tmp_path)
    meta = json.loads(str(arrays["metadata"][()]))
    meta["n_projections"] = 10**9
    arrays["metadata"] = np.array(json.dumps(meta))
    with pytest.raises(ChipProgramError, match="n_projections 1000000000.*MAX_PROJECTIONS"):
        ChipProgram.load(write_npz(tmp_path / "many.npz", arrays))


def test_load_checks_array_sizes_from_the_headers_before_reading(tmp_path, monkeypatch):
    # A compressed archive whose weights_1 would be 2**26 int8 zeros (64 MiB) in a small
    # file: refused from the .npy header, before the array is read.
    arrays = saved_arrays(make_program(), tmp_path)
    arrays["weights_1"] = np.zeros((2**13, 2**13), np.int8)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 1_000_000
    read = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(1) or original(*a, **k))
    ChipProgram.load(make_program().save(tmp_path / "good.npz"))
    assert len(read) == 2 + 4 * 3  # the counter sees every array a normal load reads
    read.clear()
    with pytest.raises(ChipProgramError, match="weights_1 has shape \\(8192, 8192\\).*MAX_PROJECTION_WEIGHTS"):
        ChipProgram.load(path)
    assert len(read) <= 1  # at most the metadata was read, no weight matrix
    arrays["weights_1"] = np.ones(4, np.float32)
    arrays["thresholds_0"] = np.ones(MAX_POPULATION_NEURONS + 1, np.float32)
    with pytest.raises(ChipProgramError, match="thresholds_0 has shape.*MAX_POPULATION_NEURONS"):
        ChipProgram.load(write_npz(tmp_path / "wide.npz", arrays))
