"""The chip program file: one ``.npz`` archive, written and read from the program's field list.

A single ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``, holding
``metadata``, a 0-d unicode array with a JSON object, then the arrays: ``obs_bound``, the
state levels and tick gains that are there (``state_levels_<k>``, ``tick_gain_<k>``), and
``weights_<k>``, ``thresholds_<k>``, ``alpha_decay_<k>``, ``i_offset_<k>`` for each
projection / population ``k = 0 .. n - 1``. The metadata::

    {"format": "spiking-dqn-chip-program", "format_version": 2, "n_projections": n,
     "reset": ..., "v_reset": ..., "ticks": ..., "delay": ..., "encoding": ...,
     "seed": ..., "lambdas": [...], "centered_readout": ..., "encoding_alpha": ...,
     "weight_bits": [...], "state_levels": null or [true, false, ...], "tick_gain": ...,
     "model_digest": null or "<sha-256 hex>"}

Which field goes where comes from its kind (:mod:`spiking_dqn.hardware.program_fields`):
scalars in the metadata, arrays as arrays, and for the optional per-population arrays the
metadata says which entries the archive holds.

Format versions: 2 adds ``weight_bits`` (one integer per projection, 2..8; required in a
version-2 file). Version-1 files (no ``weight_bits``) load as 8-bit programs, which they
are: version 1 only ever held weights in [-127, 127]. Files without ``centered_readout``,
``encoding_alpha``, ``state_levels``, ``tick_gain`` or ``model_digest`` load with False, 0,
None, None and None.

:func:`read_program` bounds what it reads in bytes before it reads it: each zip entry's
declared size (and no encrypted entry), the metadata entry's length (``MAX_METADATA_BYTES``)
and its JSON nesting (``MAX_METADATA_DEPTH``), then every array's shape, dtype (numeric:
no void, complex, string or object arrays) and bytes (``MAX_ARRAY_BYTES``) from its
header, so a damaged or crafted file cannot make it (or a backend) allocate without bound.
Every failure to read a file is a :class:`ChipProgramError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spiking_dqn.files import atomic_write
from spiking_dqn.hardware.program_fields import (
    ARRAY,
    MAX_ARRAY_BYTES,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_PROJECTIONS,
    MAX_TICKS,
    OPTIONAL_ARRAYS,
    PER_PROJECTION,
    SCALAR,
    fields_of,
    required_in_file,
)
from spiking_dqn.semantics.checks import is_int

FORMAT_NAME = "spiking-dqn-chip-program"
FORMAT_VERSION = 2
# What reading a damaged or crafted zip archive can raise (zipfile, zlib, numpy's .npy reader;
# RuntimeError: an encrypted entry; MemoryError, RecursionError: a header or JSON beyond reason).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, NotImplementedError,
    RuntimeError, MemoryError, RecursionError, OverflowError,
)
#: Room for a ``.npy`` header in a zip entry, beyond its data.
_HEADER_BYTES = 2**16
#: The dtype kinds of a program's arrays (signed, unsigned integers, floats): no bool, void,
#: complex, string or object arrays; the program's checks then require int8 weights.
_NUMERIC_KINDS = "iuf"


class ChipProgramError(ValueError):
    """A chip program file that cannot be loaded (corrupt, foreign, too new or invalid)."""


def entry_header(
    data: Any, name: str, max_bytes: int, check_shape: Callable[[tuple[int, ...], str], None] | None = None
) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of array ``name`` of an open ``.npz`` archive, from its ``.npy`` header only.

    The zip entry must not be encrypted nor declare more than ``max_bytes`` (plus a header);
    the array must not hold more than ``max_bytes``.

    :param data: the ``np.load`` result (an ``NpzFile``)
    :param name: the array's name
    :param max_bytes: the most bytes the array may hold
    :param check_shape: checks the shape first, ``(shape, name) -> None`` raising ``ValueError``
    :raises ValueError: an unreadable header, or an entry or array over the bound
    """
    info = data.zip.getinfo(f"{name}.npy")
    if info.flag_bits & 0x1:
        raise ValueError(f"{name} is an encrypted zip entry")
    try:
        with data.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            fmt = np.lib.format
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    except Exception as exc:  # numpy parses headers with tokenize and ast: any of their errors is a damaged file
        raise ValueError(f"array {name!r} has an unreadable header ({type(exc).__name__}: {exc})") from None
    shape = tuple(int(n) for n in shape)
    if check_shape is not None:
        check_shape(shape, name)
    if info.file_size > max_bytes + _HEADER_BYTES:
        raise ValueError(f"{name} declares {info.file_size} bytes, over the limit of {max_bytes} bytes")
    if any(n < 0 for n in shape) or math.prod(shape) * dtype.itemsize > max_bytes:
        raise ValueError(f"{name} has shape {shape} of {dtype}, over the limit of {max_bytes} bytes")
    return shape, dtype


# ---------------------------------------------------------------------- writing


def write_program(program: Any, path: str | os.PathLike) -> Path:
    """Write a chip program to one ``.npz`` file (no pickle), at exactly ``path``, atomically.

    The archive goes to a temporary file beside ``path`` that replaces it only once complete
    (:func:`spiking_dqn.files.atomic_write`): a failure or a kill keeps the previous file.

    :param program: the :class:`~spiking_dqn.hardware.program.ChipProgram`
    :param path: file to write
    :return: the path written
    """
    path = Path(path)
    n = len(program.weights)
    metadata: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "n_projections": n}
    for f in fields_of(program, SCALAR, OPTIONAL_ARRAYS):
        value = getattr(program, f.name)
        if f.metadata["kind"] == OPTIONAL_ARRAYS:  # which entries the archive holds
            value = None if value is None else [entry is not None for entry in value]
        metadata[f.name] = value
    arrays: dict[str, np.ndarray] = {"metadata": np.array(json.dumps(metadata))}
    for f in fields_of(program, ARRAY):
        arrays[f.name] = getattr(program, f.name)
    for f in fields_of(program, OPTIONAL_ARRAYS):
        for k, entry in enumerate(getattr(program, f.name) or []):
            if entry is not None:
                arrays[f"{f.name}_{k}"] = entry
    for k in range(n):
        for f in fields_of(program, PER_PROJECTION):
            arrays[f"{f.name}_{k}"] = getattr(program, f.name)[k]
    with atomic_write(path) as tmp, open(tmp, "wb") as file:  # a failure keeps the previous file
        np.savez(file, **arrays)
    return path


# ---------------------------------------------------------------------- reading


def read_program(cls: type, path: str | os.PathLike) -> Any:
    """Read a program written by :func:`write_program`, and validate it.

    :param cls: the program class (:class:`~spiking_dqn.hardware.program.ChipProgram`)
    :param path: the ``.npz`` file
    :raises FileNotFoundError: no such file
    :raises ChipProgramError: truncated or corrupt file, an ``.npz`` that is not a chip
        program, a file from a newer format version, missing arrays, invalid contents
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no chip program file at {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _ARCHIVE_ERRORS as exc:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            raise ChipProgramError(f"{path}: truncated or damaged chip program archive ({exc})") from None
        raise ChipProgramError(f"{path}: not a chip program file (not an .npz archive: {exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ChipProgramError(f"{path}: not a chip program file (a single .npy array, not an .npz archive)")
    with loaded as data:
        try:
            return _from_archive(cls, data, path)
        except ChipProgramError:
            raise
        except _ARCHIVE_ERRORS as exc:
            raise ChipProgramError(f"{path}: truncated or damaged chip program archive ({exc})") from None


def _from_archive(cls: type, data: Any, path: Path) -> Any:
    """The program of an open archive: metadata, array headers, arrays, then the program itself."""
    metadata, version = _read_metadata(data, path)
    n = _check_metadata(cls, metadata, version, path)
    names = _array_names(cls, n)
    missing = [name for name in names if name not in data.files]
    if missing:
        raise ChipProgramError(f"{path}: chip program archive is missing arrays {missing}")
    optional = {}
    for f in fields_of(cls, OPTIONAL_ARRAYS):
        optional[f.name] = _optional_names(f.name, metadata.get(f.name), n, data, path)
        names.update({name: f for name in optional[f.name] or [] if name is not None})
    for name, f in names.items():  # sizes and dtypes from the headers, before any array is read
        try:
            _, dtype = entry_header(data, name, MAX_ARRAY_BYTES, f.metadata["check_shape"])
        except ValueError as exc:
            raise ChipProgramError(f"{path}: invalid chip program: {exc}") from None
        if dtype.kind not in _NUMERIC_KINDS:
            raise ChipProgramError(f"{path}: invalid chip program: {name} has dtype {dtype.str}, not a number type")
    try:
        arrays = {name: data[name] for name in names}
    except _ARCHIVE_ERRORS as exc:
        raise ChipProgramError(f"{path}: truncated or damaged chip program archive ({exc})") from None
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = f.metadata["kind"]
        if kind == PER_PROJECTION:
            kwargs[f.name] = [arrays[f"{f.name}_{k}"] for k in range(n)]
        elif kind == ARRAY:
            kwargs[f.name] = arrays[f.name]
        elif kind == OPTIONAL_ARRAYS:
            entries = optional[f.name]
            kwargs[f.name] = None if entries is None else [None if e is None else arrays[e] for e in entries]
        else:
            kwargs[f.name] = metadata[f.name] if f.name in metadata else f.metadata["absent"]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ChipProgramError(f"{path}: invalid chip program: {exc}") from None


def _read_metadata(data: Any, path: Path) -> tuple[dict[str, Any], int]:
    """The archive's metadata and format version, checked to be a chip program this code reads."""
    if "metadata" not in data.files:
        raise ChipProgramError(f"{path}: not a spiking-dqn chip program (no 'metadata' entry; foreign .npz?)")
    try:
        shape, dtype = entry_header(data, "metadata", MAX_METADATA_BYTES)
        if shape != () or dtype.kind != "U":
            raise ValueError(f"metadata must be one unicode string, got shape {shape} of {dtype.str}")
        metadata = json.loads(str(data["metadata"][()]))
    except (ValueError, TypeError, IndexError, RecursionError) as exc:
        raise ChipProgramError(f"{path}: unreadable chip program metadata ({exc})") from None
    if _depth(metadata) > MAX_METADATA_DEPTH:
        raise ChipProgramError(f"{path}: chip program metadata nested deeper than {MAX_METADATA_DEPTH} levels")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        tag = metadata.get("format") if isinstance(metadata, dict) else None
        raise ChipProgramError(
            f"{path}: not a spiking-dqn chip program (format tag {tag!r}, expected {FORMAT_NAME!r})"
        )
    version = metadata.get("format_version")
    if not is_int(version) or version < 1:
        raise ChipProgramError(f"{path}: invalid chip program format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ChipProgramError(
            f"{path}: chip program format version {version} was written by a newer spiking-dqn "
            f"(this one reads up to version {FORMAT_VERSION}); upgrade spiking-dqn to load it"
        )
    return metadata, version


def _depth(value: Any) -> int:
    """How deeply a JSON value nests lists and objects (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, level)
            if level <= MAX_METADATA_DEPTH:  # deeper is refused anyway
                todo.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _check_metadata(cls: type, metadata: dict[str, Any], version: int, path: Path) -> int:
    """The number of projections, once the metadata holds what its version must and no unbounded size."""
    required = ["n_projections"] + [f.name for f in fields_of(cls, SCALAR) if required_in_file(f, version)]
    missing_keys = [k for k in required if k not in metadata]
    if missing_keys:
        raise ChipProgramError(f"{path}: chip program metadata lacks {missing_keys}")
    null = [k for k in required if metadata[k] is None]
    if null:  # a value the file's version requires (weight_bits: null would read as 8 bits)
        raise ChipProgramError(f"{path}: chip program metadata has null {null} (format version {version})")
    n = metadata["n_projections"]
    if not is_int(n) or not 1 <= n <= MAX_PROJECTIONS:
        raise ChipProgramError(
            f"{path}: invalid n_projections {n!r} in chip program metadata (1 .. MAX_PROJECTIONS = {MAX_PROJECTIONS})"
        )
    ticks = metadata["ticks"]
    if is_int(ticks) and ticks > MAX_TICKS:
        raise ChipProgramError(
            f"{path}: chip program metadata says ticks = {ticks}, over the limit MAX_TICKS = {MAX_TICKS}"
        )
    return n


def _array_names(cls: type, n: int) -> dict[str, dataclasses.Field]:
    """The arrays every program of ``n`` projections has, with their fields, in the file's order."""
    names = {f.name: f for f in fields_of(cls, ARRAY)}
    names.update({f"{f.name}_{k}": f for k in range(n) for f in fields_of(cls, PER_PROJECTION)})
    return names


def _optional_names(name: str, present: Any, n: int, data: Any, path: Path) -> list[str | None] | None:
    """The array names of an optional per-population field (``None`` where an entry is absent)."""
    if present is None:
        return None
    if not isinstance(present, list) or len(present) != n or not all(isinstance(x, bool) for x in present):
        raise ChipProgramError(f"{path}: invalid {name} entry {present!r} in chip program metadata")
    names = [f"{name}_{k}" if x else None for k, x in enumerate(present)]
    absent = [entry for entry in names if entry is not None and entry not in data.files]
    if absent:
        raise ChipProgramError(f"{path}: chip program archive is missing arrays {absent}")
    return names
