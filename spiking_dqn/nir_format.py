"""The mapping between chip programs and NIR graphs (the ``nir`` package, https://neuroir.org), both directions.

:func:`spiking_dqn.export.to_nir` writes a :class:`~spiking_dqn.hardware.program.ChipProgram`
as the NIR graph ``Input -> [Delay ->] Affine -> LIF/IF -> ... -> [Delay ->] Affine -> IF/LIF -> Output``
(a ``Delay`` of one tick before each Affine when the program's synaptic delay is 1);
:func:`spiking_dqn.nir_read.from_nir` reads a graph of that shape back, one made here or
elsewhere; ``write_nir`` and ``read_nir`` do the same through a NIR (HDF5) file.

Mapping, with the forward-Euler discretisation py-spinnaker2's NIR importer uses (one tick
of ``dt``, which a graph made elsewhere does not carry: its reader names it; DESIGN.md,
"NIR"): a ``LIF`` with ``tau, r, v_leak`` gives ``alpha_decay = 1 - dt / tau`` and an input
factor ``f = dt / tau * r``; an ``IF`` gives ``alpha_decay = 1`` and ``f = dt * r`` (NIR's
``dv/dt = R I``, for any ``r``). With a weight scale ``s`` (chip units per NIR unit) the
chip population is::

    weights   = rint(s * W)                  (Affine/Linear weight; integers in [-L, L] at its width)
    i_offset  = s * (b + v_leak / r)         (Affine bias b; v_leak / r only for a LIF)
    threshold = s * v_threshold / f
    v_reset   = s * v_reset / f

Exported graphs put ``i_offset`` in the Affine bias and ``v_leak = 0`` and use ``s = 1``.
A ``LIF`` gets ``tau = dt / (1 - alpha_decay)``, moved by a few ulps where that makes
``1 - dt / tau`` round to the program's float32 decay, and ``r = 1`` (the readers that
ignore ``r``, such as Norse, then run the same equation), so ``f = dt / tau`` and its
``v_threshold`` and ``v_reset`` are the chip's times ``f``; an ``IF`` gets ``r = 1 / dt``
(moved to make ``f`` equal 1) and the chip's thresholds. One tick reproduces
``v = alpha_decay * v + i_offset + syn`` (in NIR units, ``f`` times it), and
``to_nir`` checks that ``from_nir`` gives the program back bit for bit and refuses it
otherwise. A population with ``alpha_decay == 1`` (the readout integrator,
threshold 5000) is an ``IF``, or with ``to_nir(..., readout="lif")`` a ``LIF`` with
``tau =`` :data:`INTEGRATOR_TAU` (its decay ``1 - dt / tau`` is exactly 1 in float64
for any ``dt`` up to 1/16 s, snnTorch's fixed 1e-4 s included, and in float32 up to 1 s),
``r = tau / dt`` (moved to make ``f`` equal 1) and the chip's thresholds: the form
snnTorch 1.0 reads (it takes an ``IF`` only with ``r = 1`` and turns it into a leaky
neuron); a population mixing 1 with other decays is refused.

What NIR cannot express is kept in the graph's ``metadata`` (:data:`METADATA_KEYS`): the
reset mode (NIR resets to ``v_reset``; the chip may reset by subtraction), ticks, delay (also as nodes),
encoder bounds, mode, seed and hybrid slope, lambdas, weight widths, the centred readout
and ``dt``, and the program's checksum (``ChipProgram.digest()``, :data:`DIGEST_KEY`), which
``from_nir`` checks: a graph whose content no longer matches it is refused as damaged. A consumer other than ``from_nir`` must read the reset from its own configuration;
``to_nir`` warns about it for a subtract-reset program. What other readers do with an
exported graph (snnTorch, Norse) is measured by ``benchmarks/nir_readers.py`` (docs/nir.md).
"""

from __future__ import annotations

import math
import os
from typing import Any

import h5py
import nir
import numpy as np

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_fields import (
    ARRAY,
    MAX_PROJECTION_WEIGHTS,
    SCALAR,
    check_projection_size,
    fields_of,
)
from spiking_dqn.hardware.program_file import ChipProgramError

#: Tick duration of exported graphs, in seconds (the chip's 1 ms tick).
DEFAULT_DT = 1e-3
#: The program fields a graph has no node for: its scalars and the encoder bounds.
METADATA_FIELDS = tuple(f.name for f in fields_of(ChipProgram, ARRAY, SCALAR))
#: ``tau`` in seconds of an integrator written as a LIF (``to_nir(..., readout="lif")``): ``1 - dt / tau``
#: is exactly 1 in float64 for ``dt`` <= 1/16 s and in float32 for ``dt`` <= 1 s.
INTEGRATOR_TAU = 2.0**50
#: Metadata key of the checksum of the program a graph holds (``ChipProgram.digest()``, every field).
DIGEST_KEY = "digest"
#: Graph metadata written by :func:`to_nir` and read by :func:`from_nir`.
METADATA_KEYS = ("format", "dt", *METADATA_FIELDS, DIGEST_KEY)
#: Limits of a NIR file's HDF5 tree, checked before anything is read (:func:`check_nir_file`): group
#: nesting, objects, and elements of a string dataset (a chip program's graph needs far fewer).
MAX_FILE_DEPTH = 8
MAX_FILE_OBJECTS = 20_000
MAX_FILE_STRINGS = 4096
#: Bytes of all the datasets of a NIR file together (declared shapes x item sizes, summed from the
#: headers before any is read): twice :data:`MAX_PROJECTION_WEIGHTS` float64 values, more weights
#: than one chip's memory holds (152 processing elements x 128 KiB) even as int8.
MAX_FILE_BYTES = 2 * MAX_PROJECTION_WEIGHTS * 8
NEURON_NODES = (nir.LIF, nir.IF)
WEIGHT_NODES = (nir.Affine, nir.Linear)


class NIRError(ChipProgramError):
    """A NIR file or graph that is not a chip program (or a program NIR cannot hold exactly)."""


# ---------------------------------------------------------------------- discretisation


def lif_factor(tau: np.ndarray, r: np.ndarray, dt: float) -> np.ndarray:
    """py-spinnaker2's input factor of a LIF, ``dt / tau * r``."""
    return dt / tau * r


def lif_alpha(tau: np.ndarray, dt: float) -> np.ndarray:
    """py-spinnaker2's decay of a LIF, ``1 - dt / tau``, as float32."""
    return (1.0 - dt / tau).astype(np.float32)


def nudge(value: np.ndarray, ok: Any) -> np.ndarray:
    """``value`` moved by at most 4 ulps, element by element, to where ``ok`` holds."""
    out = value.copy()
    for i in range(out.size):
        candidates = [out.flat[i]]
        for direction in (np.inf, -np.inf):
            x = out.flat[i]
            for _ in range(4):
                x = np.nextafter(x, direction)
                candidates.append(x)
        for x in candidates:
            if ok(i, x):
                out.flat[i] = x
                break
    return out


def lif_constants(alpha: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """``tau`` that gives back ``alpha``, and the input factor ``f = dt / tau`` of ``r = 1`` (float64 both)."""
    a = alpha.astype(np.float64)
    tau = nudge(dt / (1.0 - a), lambda i, x: np.float32(1.0 - dt / x) == alpha.flat[i])
    return tau, lif_factor(tau, np.ones_like(tau), dt)


# ---------------------------------------------------------------------- files


def check_nir_file(path: str | os.PathLike) -> None:
    """Refuse a NIR (HDF5) file that reaches outside itself or is too large, before any array is read.

    Every link must be a hard link (external and soft links are not followed), no dataset may
    keep its data in other files (external or virtual storage), and every dataset is a number
    or string array within the program limits (:data:`MAX_PROJECTION_WEIGHTS` elements, a 2-D
    one within ``check_projection_size``), checked from its header, and all of them together
    hold at most :data:`MAX_FILE_BYTES` (their declared sizes summed before any is read).

    :raises NIRError: the reason
    :raises OSError: h5py cannot open the file (the caller maps it)
    """
    with h5py.File(path, "r") as f:
        _check_group(f, 0, [0, 0])


def _check_group(group: h5py.Group, depth: int, count: list[int]) -> None:
    """Check ``group``'s tree; ``count``: the objects seen and the bytes their datasets declare, so far."""
    if depth > MAX_FILE_DEPTH:
        raise NIRError(f"{group.name}: groups nested deeper than {MAX_FILE_DEPTH}; not a NIR graph of a chip program")
    for name in group:
        count[0] += 1
        if count[0] > MAX_FILE_OBJECTS:
            raise NIRError(f"more than {MAX_FILE_OBJECTS} objects in the file; not a NIR graph of a chip program")
        link = group.get(name, getlink=True)
        where = f"{group.name.rstrip('/')}/{name}"
        if not isinstance(link, h5py.HardLink):
            raise NIRError(f"{where} is a link ({type(link).__name__}): links to other files or places are not followed")
        item = group[name]
        if isinstance(item, h5py.Group):
            _check_group(item, depth + 1, count)
        elif isinstance(item, h5py.Dataset):
            count[1] += _check_dataset(item, where)
            if count[1] > MAX_FILE_BYTES:
                raise NIRError(f"the datasets of the file declare more than MAX_FILE_BYTES = {MAX_FILE_BYTES} bytes "
                               f"together (at {where}); not a NIR graph of a chip program")
        else:
            raise NIRError(f"{where} is a {type(item).__name__}, not a group or dataset of a NIR graph")


def _check_dataset(data: h5py.Dataset, where: str) -> int:
    """Check one dataset from its header; return the bytes it declares (shape x item size)."""
    if data.external or data.is_virtual:
        raise NIRError(f"{where} keeps its data in other files; a NIR file of a chip program holds its data itself")
    kind, size = data.dtype.kind, math.prod(data.shape) if data.shape is not None else 0  # exact, no overflow
    strings = kind == "S" or (kind == "O" and h5py.check_string_dtype(data.dtype) is not None)
    if strings:
        if size > MAX_FILE_STRINGS or data.dtype.itemsize > 4096:
            raise NIRError(f"{where}: a string dataset of shape {data.shape} ({data.dtype}) is too large")
        return size * data.dtype.itemsize
    if kind not in "biuf" or data.dtype.itemsize > 8:
        raise NIRError(f"{where}: dtype {data.dtype} is not a number type of a NIR graph")
    if size > MAX_PROJECTION_WEIGHTS:
        raise NIRError(
            f"{where} has shape {data.shape}: more than MAX_PROJECTION_WEIGHTS = {MAX_PROJECTION_WEIGHTS} values"
        )
    if len(data.shape) == 2:
        try:
            check_projection_size(data.shape, where)
        except ValueError as exc:
            raise NIRError(str(exc)) from None
    return size * data.dtype.itemsize
