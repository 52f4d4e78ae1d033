"""NIR files that are written atomically and carry their own integrity (issue 27)."""

import builtins
import errno
import os
import warnings

import h5py
import numpy as np
import pytest

from spiking_dqn import export
from spiking_dqn.export import write_nir
from spiking_dqn.files import PARTIAL_MARK
from spiking_dqn.nir_format import NIRError
from spiking_dqn.nir_read import read_nir
from tests.test_nir import random_program


def _write(program, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_nir(program, path)


@pytest.fixture
def previous(tmp_path):
    """A good NIR file already at the target path, and the program it holds."""
    program = random_program(np.random.default_rng(1), "zero")
    path = tmp_path / "agent.nir"
    _write(program, path)
    return program, path


def _assert_kept(previous):
    program, path = previous
    assert read_nir(path) == program
    assert not [p for p in os.listdir(path.parent) if PARTIAL_MARK in p]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_disk_failing_at_the_nth_write_keeps_the_previous_file(previous, monkeypatch, n):
    new = random_program(np.random.default_rng(2), "subtract")
    real_open, calls = builtins.open, []

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            calls.append(1)
            data = bytes(data)
            if len(calls) > n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data[: len(data) // 2] if n else data)

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Full(f) if PARTIAL_MARK in str(file) and "w" in mode else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises((OSError, NIRError)) as info:
        _write(new, previous[1])
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    _assert_kept(previous)


def test_a_failing_hdf5_writer_keeps_the_previous_file(previous, monkeypatch):
    real, calls = h5py.Group.create_dataset, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError):
        _write(random_program(np.random.default_rng(3), "zero"), previous[1])
    monkeypatch.undo()
    _assert_kept(previous)


def test_a_file_that_does_not_read_back_is_not_renamed(previous, monkeypatch):
    monkeypatch.setattr(export, "read_nir", lambda path: random_program(np.random.default_rng(9), "zero"))
    with pytest.raises(NIRError, match="reads back as another program"):
        _write(random_program(np.random.default_rng(4), "zero"), previous[1])
    monkeypatch.undo()
    _assert_kept(previous)


def _edit(path, name, value):
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = value


@pytest.mark.parametrize(
    "name, value",
    [
        ("node/nodes/affine_0/weight", np.zeros((9, 6), np.float32)),
        ("node/metadata/ticks", 7),
        ("node/metadata/centered_readout", True),
        ("node/metadata/v_reset", 0.5),
        ("node/metadata/seed", 12),
    ],
)
def test_an_edited_file_is_refused_as_damaged(previous, name, value):
    _edit(previous[1], name, value)
    with pytest.raises(NIRError, match="damaged"):
        read_nir(previous[1])


def test_a_lost_format_tag_is_refused_as_damaged(previous):
    _edit(previous[1], "node/metadata/format", "spiking_dqn.chip_programX")
    with pytest.raises(NIRError, match="damaged.*format tag"):
        read_nir(previous[1], dt=1e-3)


def test_options_still_override_a_checked_graph(previous):
    program, path = previous
    assert read_nir(path, ticks=program.ticks + 1).ticks == program.ticks + 1
    _edit(path, "node/metadata/ticks", program.ticks + 1)
    with pytest.raises(NIRError, match="damaged"):
        read_nir(path, ticks=program.ticks + 1)


def test_single_bit_flips_never_load_as_another_program(previous, tmp_path):
    program, path = previous
    data = path.read_bytes()
    rng = np.random.default_rng(27)
    flipped = tmp_path / "flipped.nir"
    for position in rng.integers(0, len(data), 150):
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        flipped.write_bytes(bytes(damaged))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                back = read_nir(flipped)
        except NIRError:
            continue
        assert back == program, f"a flip at byte {position} loaded as another program"


def test_export_on_a_full_disk_keeps_the_previous_file_and_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from spiking_dqn.cli import main
    from spiking_dqn.hardware.program import ChipProgram

    source = Path(__file__).resolve().parents[1] / "agents" / "trained" / "CartPole-v0" / "chip_program.npz"
    out = tmp_path / "cartpole.nir"
    assert main(["export", str(source), "--nir", str(out)]) == 0
    capsys.readouterr()
    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if PARTIAL_MARK in str(file) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    try:
        rc = main(["export", str(source), "--nir", str(out)])
    except (OSError, SystemExit):  # the CLI's own handling of OSError is the CLI's (issue 27)
        rc = 1
    monkeypatch.undo()
    assert rc != 0
    assert "NIR graph written" not in capsys.readouterr().out
    assert read_nir(out) == ChipProgram.load(source)
