"""NIR export of chip programs: :func:`to_nir` (a graph) and :func:`write_nir` (a NIR file).

The mapping is :mod:`spiking_dqn.nir_format`'s; :func:`to_nir` checks every graph with
:func:`spiking_dqn.nir_read.from_nir`, which must give the program back bit for bit.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import nir
import numpy as np

from spiking_dqn.files import atomic_write
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_fields import OPTIONAL_ARRAYS, fields_of
from spiking_dqn.hardware.program_file import FORMAT_NAME
from spiking_dqn.nir_format import DEFAULT_DT, DIGEST_KEY, INTEGRATOR_TAU, METADATA_FIELDS, NIRError, lif_constants, nudge
from spiking_dqn.nir_read import from_nir, read_nir


def _neuron_node(
    k: int, alpha: np.ndarray, thr: np.ndarray, v_reset: np.ndarray, dt: float, readout: str
) -> tuple[str, nir.NIRNode]:
    """Population ``k``'s neuron node and its name (see :mod:`spiking_dqn.nir_format` for the mapping)."""
    n = alpha.size
    if np.all(alpha == 1.0) and readout == "if":
        r = nudge(np.full(n, 1.0 / dt), lambda i, x: dt * x == 1.0)
        return f"if_{k}", nir.IF(r=r, v_threshold=thr.copy(), v_reset=v_reset)
    if np.all(alpha == 1.0):  # readout="lif": a LIF whose decay 1 - dt / tau is 1 in float64 (f = dt / tau * r = 1)
        tau = np.full(n, INTEGRATOR_TAU)
        r = nudge(tau / dt, lambda i, x: dt / tau[i] * x == 1.0)
        return f"lif_{k}", nir.LIF(tau=tau, r=r, v_leak=np.zeros(n), v_threshold=thr.copy(), v_reset=v_reset)
    if np.any(alpha == 1.0):
        raise NIRError(
            f"population {k} mixes alpha_decay 1 (an IF) with other decays (a LIF); one NIR node type "
            "holds one population"
        )
    tau, f = lif_constants(alpha, dt)  # r = 1: the membrane in NIR units is f times the chip's
    return f"lif_{k}", nir.LIF(tau=tau, r=np.ones(n), v_leak=np.zeros(n), v_threshold=thr * f, v_reset=v_reset * f)


def to_nir(program: ChipProgram, dt: float = DEFAULT_DT, readout: str = "if") -> nir.NIRGraph:
    """The chip program as a NIR graph (see the module docstring for the mapping).

    :param program: the chip program
    :param dt: tick duration in seconds written into the time constants
    :param readout: node of the populations with ``alpha_decay == 1`` (the readout integrator):
        ``"if"`` (NIR's ``IF``, ``r = 1 / dt``; Norse reads it) or ``"lif"`` (a ``LIF`` with
        ``tau = 2**50`` s, whose decay ``1 - dt / tau`` is 1 in float64, and ``r = tau / dt``:
        snnTorch 1.0, which takes an ``IF`` only with ``r = 1`` and then leaks it, reads this one
        exactly at ``dt = 1e-4``; docs/nir.md)
    :return: ``Input -> Affine -> LIF/IF -> ... -> Output``, with the program's metadata
    :raises NIRError: a population mixing ``alpha_decay == 1`` with other values, a
        program with ``state_levels`` or ``tick_gain`` (NIR has no primitive for either),
        or a program whose graph would not read back bit for bit (checked on every export)
    """
    if not isinstance(program, ChipProgram):
        raise ValueError(f"to_nir expects a ChipProgram, got {type(program).__name__}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and positive, got {dt!r}")
    if readout not in ("if", "lif"):
        raise ValueError(f"readout must be 'if' or 'lif', got {readout!r}")
    unsupported = [f.name for f in fields_of(program, OPTIONAL_ARRAYS) if getattr(program, f.name) is not None]
    if unsupported:
        raise NIRError(
            f"NIR has no primitive for {', '.join(unsupported)} (quantized membrane state, per-tick synaptic "
            "gains): this program cannot be exported; save it with ChipProgram.save instead"
        )
    dt = float(dt)
    if program.reset == "subtract":
        warnings.warn(
            "NIR has no reset by subtraction: the graph's LIF/IF nodes say reset to v_reset, and the "
            "program's subtract reset is kept in metadata['reset'] only; a consumer other than "
            "spiking_dqn.nir_read.from_nir must read the reset mode from its own configuration",
            UserWarning,
            stacklevel=2,
        )
    n_in = program.layer_sizes[0]
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array([n_in]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for k, w in enumerate(program.weights):
        n = w.shape[0]
        alpha, thr = program.alpha_decay[k], program.thresholds[k]
        v_reset = np.full(n, program.v_reset, dtype=np.float64)
        if program.delay:  # the one-tick synaptic delay, before the projection
            nodes[f"delay_{k}"] = nir.Delay(delay=np.full(w.shape[1], dt))
            edges.append((previous, f"delay_{k}"))
            previous = f"delay_{k}"
        nodes[f"affine_{k}"] = nir.Affine(weight=w.astype(np.float32), bias=program.i_offset[k].copy())
        name, node = _neuron_node(k, alpha, thr, v_reset, dt, readout)
        nodes[name] = node
        edges += [(previous, f"affine_{k}"), (f"affine_{k}", name)]
        previous = name
    nodes["output"] = nir.Output(output_type=np.array([program.n_actions]))
    edges.append((previous, "output"))
    metadata = {"format": FORMAT_NAME, "dt": dt}
    for name in METADATA_FIELDS:  # arrays and lists as numpy arrays (lambdas float64, weight_bits int64)
        value = getattr(program, name)
        if value is None:  # HDF5 holds no None: an absent key reads back as the field's default
            continue
        metadata[name] = np.array(value) if isinstance(value, (list, np.ndarray)) else value
    metadata[DIGEST_KEY] = program.digest()  # checked by from_nir: a damaged file is refused
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    if from_nir(graph) != program:  # e.g. a decay so close to 0 that no float tau gives it back
        raise NIRError(f"{program!r} cannot be written as NIR at dt = {dt} so that it reads back bit for bit")
    return graph


def write_nir(program: ChipProgram, path: str | os.PathLike, dt: float = DEFAULT_DT, readout: str = "if") -> Path:
    """Write the program as a NIR (HDF5) file, atomically.

    The HDF5 file is made in memory (h5py reports some write errors only when its objects are
    freed), written to a temporary name beside ``path``, read back with :func:`read_nir` and
    renamed over ``path`` only when it gives the program back (:func:`spiking_dqn.files.atomic_write`):
    a failure at any point leaves the previous file at ``path`` as it was.

    :param program: the chip program
    :param path: file to write (``.nir`` by convention)
    :param dt: tick duration in seconds, see :func:`to_nir`
    :param readout: ``"if"`` or ``"lif"``, see :func:`to_nir`
    :return: the path written
    :raises NIRError: a program NIR cannot hold (:func:`to_nir`), or a written file that does not read back
    :raises OSError: the file could not be written (full disk, no permission)
    """
    path = Path(path)
    graph = to_nir(program, dt=dt, readout=readout)
    buffer = io.BytesIO()
    nir.write(buffer, graph)  # closed inside nir.write: the HDF5 image is complete in memory
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        try:
            back = read_nir(tmp)
        except NIRError as exc:
            raise NIRError(f"{path}: the NIR file written does not read back ({exc}); the previous file is kept") from None
        if back != program:
            raise NIRError(f"{path}: the NIR file written reads back as another program; the previous file is kept")
    return path
