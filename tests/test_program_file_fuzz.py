"""Fuzzing the chip program loader: every load returns the valid program or raises ChipProgramError.

Seeded and quick (a few hundred cases, a few seconds): byte flips, truncations and
insertions in a shipped program's file; crafted ``.npy`` headers (void, complex, string,
object and bool dtypes, shapes of gigabytes or negative); crafted metadata (padded to
megabytes, nested deeply, fields replaced with odd JSON values, ``weight_bits: null``);
zip entries flagged encrypted or declaring a huge uncompressed size.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spiking_dqn.hardware import ChipProgram, ChipProgramError
from spiking_dqn.hardware.program_fields import MAX_ARRAY_BYTES, MAX_METADATA_BYTES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz"
#: dtypes a program's file must never have its arrays read as (the metadata: anything but unicode)
REFUSED_DESCRS = ["|V20000000", "|V8", "<c8", "<c16", "<U5", "|S5", "|O", "|b1", "<M8[s]"]
#: dtypes a numeric field may be stored as (the program's checks decide the rest)
NUMERIC_DESCRS = ["<f4", ">f4", "<f8", "|i1", "<i2", "<i8", "|u1"]
SHAPES = [(), (5,), (4, 6), (0, 10**12), (10**10,), (2**31, 2**31), (37 * 2**30,), (119 * 2**30 // 8,)]


def valid_program() -> ChipProgram:
    return ChipProgram.load(SHIPPED)


def npy_bytes(descr: str, shape: tuple, payload: bytes = b"") -> bytes:
    """A ``.npy`` (version 1.0) with the given header and data bytes."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape})
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


def entries_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def metadata_entry(text: str) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(text))
    return buffer.getvalue()


def load_bytes(tmp_path: Path, data: bytes, name: str = "case.npz"):
    """Load ``data`` as a program file: the program, or the ChipProgramError (any other exception fails)."""
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return ChipProgram.load(path)
    except ChipProgramError as exc:
        return exc


def test_byte_mutations_of_a_shipped_program_load_it_or_are_refused(tmp_path):
    rng = np.random.default_rng(27)
    good = SHIPPED.read_bytes()
    valid = valid_program()
    for case in range(250):
        data = bytearray(good)
        kind = case % 5
        if kind == 0:  # one to a few bytes overwritten
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
        elif kind == 1:  # one bit flipped
            i = int(rng.integers(len(data)))
            data[i] ^= 1 << int(rng.integers(8))
        elif kind == 2:  # truncated
            data = data[: int(rng.integers(len(data)))]
        elif kind == 3:  # random bytes inserted
            i = int(rng.integers(len(data)))
            data[i:i] = rng.bytes(int(rng.integers(1, 64)))
        else:  # a 4-byte field (sizes, offsets in the zip headers) set to an extreme
            i = int(rng.integers(len(data) - 4))
            data[i : i + 4] = struct.pack("<I", int(rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 2**20])))
        result = load_bytes(tmp_path, bytes(data))
        assert isinstance(result, ChipProgramError) or result == valid, case


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # float64 data cast to float32
def test_crafted_array_headers_are_refused_or_load(tmp_path):
    rng = np.random.default_rng(270)
    entries = entries_of(SHIPPED)
    arrays = [name for name in entries if name != "metadata.npy"]
    for case in range(150):
        name = str(rng.choice(arrays))
        descr = str(rng.choice(REFUSED_DESCRS + NUMERIC_DESCRS))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        payload = rng.bytes(int(rng.integers(0, 200)))
        result = load_bytes(tmp_path, zip_bytes({**entries, name: npy_bytes(descr, shape, payload)}))
        assert isinstance(result, (ChipProgram, ChipProgramError)), case
        if descr in REFUSED_DESCRS or (shape and min(shape) and np.prod(shape, dtype=float) * 8 > MAX_ARRAY_BYTES):
            assert isinstance(result, ChipProgramError), (case, name, descr, shape)


ODD_VALUES = [None, -1, 0, 2**64, 1e308, float("nan"), "x", "", [], {}, [[[]]], True, [None], ["a"], [2**70], -0.0]


def test_crafted_metadata_is_refused_or_loads(tmp_path):
    rng = np.random.default_rng(2700)
    entries = entries_of(SHIPPED)
    meta = json.loads(str(np.load(SHIPPED)["metadata"][()]))
    for case in range(150):
        crafted = dict(meta)
        for _ in range(int(rng.integers(1, 3))):
            key = str(rng.choice(sorted(meta)))
            crafted[key] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
        text = json.dumps(crafted)
        result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": metadata_entry(text)}))
        assert isinstance(result, (ChipProgram, ChipProgramError)), (case, crafted)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"format": "spiking-dqn-chip-program", "format_version": 2, "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"format": "spiking-dqn-chip-program", "format_version": 2, "x": [[[[[[[1]]]]]]]}',
        '{"a": ' * 20_000 + "1" + "}" * 20_000,
    ],
)
def test_deeply_nested_metadata_is_refused(tmp_path, text):
    entries = entries_of(SHIPPED)
    result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": metadata_entry(text)}))
    assert isinstance(result, ChipProgramError)


def test_padded_metadata_is_refused_from_its_header(tmp_path, monkeypatch):
    entries = entries_of(SHIPPED)
    meta = str(np.load(SHIPPED)["metadata"][()])
    read = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(1) or original(*a, **k))
    padded = meta + " " * (MAX_METADATA_BYTES // 4)  # unicode: 4 bytes a character
    result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": metadata_entry(padded)}))
    assert isinstance(result, ChipProgramError) and "metadata" in str(result) and read == []
    # a huge metadata declared in the header only (the 100 M character case): refused unread
    huge = npy_bytes("<U100000000", (), b"")
    result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": huge}))
    assert isinstance(result, ChipProgramError) and read == []
    for descr, shape in [("<f4", ()), ("<U10", (2,)), ("|O", ())]:
        result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": npy_bytes(descr, shape, b"\0" * 80)}))
        assert isinstance(result, ChipProgramError)


@pytest.mark.parametrize("descr", REFUSED_DESCRS)
def test_non_numeric_dtypes_are_refused_before_reading(tmp_path, monkeypatch, descr):
    entries = entries_of(SHIPPED)
    read = []
    original = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(1) or original(*a, **k))
    for name in ["thresholds_0.npy", "weights_1.npy", "obs_bound.npy"]:
        crafted = npy_bytes(descr, (4,), b"\0" * 4 * np.dtype(descr if "V2" not in descr else "V8").itemsize)
        read.clear()
        result = load_bytes(tmp_path, zip_bytes({**entries, name: crafted}))
        assert isinstance(result, ChipProgramError), (name, descr)
        assert len(read) <= 1  # the metadata, not the array


def test_complex_and_string_thresholds_are_refused(tmp_path):
    entries = entries_of(SHIPPED)
    n = len(valid_program().thresholds[0])
    for array in [np.full(n, 10 + 0j, np.complex64), np.full(n, "10"), np.full(n, b"10")]:
        buffer = io.BytesIO()
        np.save(buffer, array)
        result = load_bytes(tmp_path, zip_bytes({**entries, "thresholds_0.npy": buffer.getvalue()}))
        assert isinstance(result, ChipProgramError) and "thresholds_0" in str(result)


@pytest.mark.parametrize("shape", [(37 * 2**30,), (119 * 2**30 // 4,), (2**40, 2**40), (-1,)])
def test_headers_declaring_gigabytes_are_refused(tmp_path, shape):
    entries = entries_of(SHIPPED)
    result = load_bytes(tmp_path, zip_bytes({**entries, "i_offset_0.npy": npy_bytes("<f4", shape, b"\0" * 64)}))
    assert isinstance(result, ChipProgramError)


def _patch_zip_headers(data: bytes, patch) -> bytes:
    """``data`` with ``patch(data, offset, local)`` applied at each local and central zip header."""
    data = bytearray(data)
    for signature, local in [(b"PK\x03\x04", True), (b"PK\x01\x02", False)]:
        i = data.find(signature)
        while i >= 0:
            patch(data, i, local)
            i = data.find(signature, i + 4)
    return bytes(data)


def test_encrypted_entries_are_refused(tmp_path):
    def encrypt(data, i, local):
        offset = i + (6 if local else 8)
        data[offset] |= 0x1

    result = load_bytes(tmp_path, _patch_zip_headers(SHIPPED.read_bytes(), encrypt))
    assert isinstance(result, ChipProgramError)


def test_a_huge_declared_uncompressed_size_is_refused(tmp_path):
    def inflate(data, i, local):
        offset = i + (22 if local else 24)
        data[offset : offset + 4] = struct.pack("<I", 0xFFFFFFF0)

    result = load_bytes(tmp_path, _patch_zip_headers(SHIPPED.read_bytes(), inflate))
    assert isinstance(result, ChipProgramError)


def test_format_2_requires_weight_bits(tmp_path):
    entries = entries_of(SHIPPED)
    meta = json.loads(str(np.load(SHIPPED)["metadata"][()]))
    assert meta["format_version"] == 2
    null_bits = metadata_entry(json.dumps({**meta, "weight_bits": None}))
    result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": null_bits}))
    assert isinstance(result, ChipProgramError) and "weight_bits" in str(result)
    # a version-1 file without weight_bits still loads as 8 bits
    old = {k: v for k, v in meta.items() if k != "weight_bits"}
    version_1 = metadata_entry(json.dumps({**old, "format_version": 1}))
    result = load_bytes(tmp_path, zip_bytes({**entries, "metadata.npy": version_1}))
    assert isinstance(result, ChipProgram) and result.weight_bits == [8] * len(result.weights)


def test_unmodified_entries_rezipped_load_the_same_program(tmp_path):
    assert load_bytes(tmp_path, zip_bytes(entries_of(SHIPPED))) == valid_program()
