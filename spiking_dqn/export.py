"""NIR export and import of chip programs (the ``nir`` package, https://neuroir.org).

:func:`to_nir` writes a :class:`~spiking_dqn.hardware.program.ChipProgram` as the NIR graph
``Input -> Affine -> LIF/IF -> ... -> Affine -> IF/LIF -> Output``; :func:`from_nir` reads a
graph of that shape back, one made here or elsewhere; :func:`write_nir` and
:func:`read_nir` do the same through a NIR (HDF5) file.

Mapping, with the forward-Euler discretisation py-spinnaker2's NIR importer uses (one tick
of ``dt``; DESIGN.md, "NIR"): a ``LIF`` with ``tau, r, v_leak`` gives
``alpha_decay = 1 - dt / tau`` and an input factor ``f = dt / tau * r``; an ``IF`` gives
``alpha_decay = 1`` and ``f = dt * r``. With a weight scale ``s`` (chip units per NIR unit)
the chip population is::

    weights   = rint(s * W)                  (Affine/Linear weight; integers in [-L, L] at its width)
    i_offset  = s * (b + v_leak / r)         (Affine bias b; v_leak / r only for a LIF)
    threshold = s * v_threshold / f
    v_reset   = s * v_reset / f

Exported graphs put ``i_offset`` in the Affine bias and ``v_leak = 0``, use ``s = 1`` and
choose ``tau = dt / (1 - alpha_decay)`` and ``r = tau / dt`` (``r = 1 / dt`` for an IF),
each moved by a few ulps where that makes ``1 - dt / tau`` round to the program's float32
decay and ``f`` equal 1 (to an ulp, which float32 thresholds absorb): one tick
reproduces ``v = alpha_decay * v + i_offset + syn`` exactly and the thresholds are the
chip's; :func:`to_nir` checks that :func:`from_nir` gives the program back bit for bit and
refuses it otherwise. A population with ``alpha_decay == 1`` (the readout integrator,
threshold 5000) is an ``IF``; a population mixing 1 with other decays is refused.

What NIR cannot express is kept in the graph's ``metadata`` (:data:`METADATA_KEYS`): the
reset mode (NIR resets to ``v_reset``; the chip may reset by subtraction), ticks, delay,
encoder bounds, mode, seed and hybrid slope, lambdas, weight widths, the centred readout
and ``dt``. A
consumer other than :func:`from_nir` must read the reset from its own configuration;
:func:`to_nir` warns about it for a subtract-reset program.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import nir
import numpy as np

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_fields import ARRAY, OPTIONAL_ARRAYS, SCALAR, fields_of
from spiking_dqn.hardware.program_file import FORMAT_NAME, ChipProgramError
from spiking_dqn.semantics.encoding import ENCODING_MODES
from spiking_dqn.semantics.lif import RESET_MODES
from spiking_dqn.semantics.widths import check_weight_bits, weight_limit

#: Tick duration of exported graphs, in seconds (the chip's 1 ms tick).
DEFAULT_DT = 1e-3
#: The program fields a graph has no node for: its scalars and the encoder bounds.
_METADATA_FIELDS = tuple(f.name for f in fields_of(ChipProgram, ARRAY, SCALAR))
#: Graph metadata written by :func:`to_nir` and read by :func:`from_nir`.
METADATA_KEYS = ("format", "dt", *_METADATA_FIELDS)
_NEURON_NODES = (nir.LIF, nir.IF)
_WEIGHT_NODES = (nir.Affine, nir.Linear)


class NIRError(ChipProgramError):
    """A NIR file or graph that is not a chip program (or a program NIR cannot hold exactly)."""


# ---------------------------------------------------------------------- discretisation


def _lif_factor(tau: np.ndarray, r: np.ndarray, dt: float) -> np.ndarray:
    """py-spinnaker2's input factor of a LIF, ``dt / tau * r``."""
    return dt / tau * r


def _lif_alpha(tau: np.ndarray, dt: float) -> np.ndarray:
    """py-spinnaker2's decay of a LIF, ``1 - dt / tau``, as float32."""
    return (1.0 - dt / tau).astype(np.float32)


def _nudge(value: np.ndarray, ok: Any) -> np.ndarray:
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


def _lif_constants(alpha: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """``tau, r`` (float64) that give back ``alpha`` and an input factor of 1 (to an ulp)."""
    a = alpha.astype(np.float64)
    tau = _nudge(dt / (1.0 - a), lambda i, x: np.float32(1.0 - dt / x) == alpha.flat[i])
    r = _nudge(tau / dt, lambda i, x: dt / tau.flat[i] * x == 1.0)
    return tau, r


# ---------------------------------------------------------------------- export


def to_nir(program: ChipProgram, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    """The chip program as a NIR graph (see the module docstring for the mapping).

    :param program: the chip program
    :param dt: tick duration in seconds written into the time constants
    :return: ``Input -> Affine -> LIF/IF -> ... -> Output``, with the program's metadata
    :raises NIRError: a population mixing ``alpha_decay == 1`` with other values, a
        program with ``state_levels`` or ``tick_gain`` (NIR has no primitive for either),
        or a program whose graph would not read back bit for bit (checked on every export)
    """
    if not isinstance(program, ChipProgram):
        raise ValueError(f"to_nir expects a ChipProgram, got {type(program).__name__}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and positive, got {dt!r}")
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
            "spiking_dqn.export.from_nir must read the reset mode from its own configuration",
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
        nodes[f"affine_{k}"] = nir.Affine(weight=w.astype(np.float32), bias=program.i_offset[k].copy())
        if np.all(alpha == 1.0):
            name = f"if_{k}"
            r = _nudge(np.full(n, 1.0 / dt), lambda i, x: dt * x == 1.0)
            nodes[name] = nir.IF(r=r, v_threshold=thr.copy(), v_reset=v_reset)
        elif np.any(alpha == 1.0):
            raise NIRError(
                f"population {k} mixes alpha_decay 1 (an IF) with other decays (a LIF); one NIR node type "
                "holds one population"
            )
        else:
            name = f"lif_{k}"
            tau, r = _lif_constants(alpha, dt)
            nodes[name] = nir.LIF(tau=tau, r=r, v_leak=np.zeros(n), v_threshold=thr.copy(), v_reset=v_reset)
        edges += [(previous, f"affine_{k}"), (f"affine_{k}", name)]
        previous = name
    nodes["output"] = nir.Output(output_type=np.array([program.n_actions]))
    edges.append((previous, "output"))
    metadata = {"format": FORMAT_NAME, "dt": dt}
    for name in _METADATA_FIELDS:  # arrays and lists as numpy arrays (lambdas float64, weight_bits int64)
        value = getattr(program, name)
        if value is None:  # HDF5 holds no None: an absent key reads back as the field's default
            continue
        metadata[name] = np.array(value) if isinstance(value, (list, np.ndarray)) else value
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    if from_nir(graph) != program:  # e.g. a decay so close to 0 that no float tau gives it back
        raise NIRError(f"{program!r} cannot be written as NIR at dt = {dt} so that it reads back bit for bit")
    return graph


def write_nir(program: ChipProgram, path: str | os.PathLike, dt: float = DEFAULT_DT) -> Path:
    """Write the program as a NIR (HDF5) file.

    :param program: the chip program
    :param path: file to write (``.nir`` by convention)
    :param dt: tick duration in seconds, see :func:`to_nir`
    :return: the path written
    """
    path = Path(path)
    nir.write(path, to_nir(program, dt=dt))
    return path


# ---------------------------------------------------------------------- import


def _chain(graph: nir.NIRGraph) -> list[str]:
    """The node names of a linear graph from its one Input to its one Output."""
    nodes, edges = graph.nodes, list(graph.edges)
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NIRError(f"edge {a!r} -> {b!r} names a node {end!r} that is not in the graph")
    unsupported = sorted({f"{name} ({type(node).__name__})" for name, node in nodes.items()
                          if not isinstance(node, (nir.Input, nir.Output, *_WEIGHT_NODES, *_NEURON_NODES))})
    if unsupported:
        raise NIRError(
            "unsupported NIR node types: " + ", ".join(unsupported)
            + "; a chip program is Input -> Affine/Linear -> LIF/IF -> ... -> Output"
        )
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"a chip program has one Input and one Output node, got inputs {inputs}, outputs {outputs}")
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        successors[a].append(b)
    chain, seen = [inputs[0]], {inputs[0]}
    while chain[-1] != outputs[0]:
        nxt = successors[chain[-1]]
        if len(nxt) != 1:
            raise NIRError(f"node {chain[-1]!r} has {len(nxt)} outgoing edges; a chip program is a chain (one each)")
        if nxt[0] in seen:
            raise NIRError(f"the graph has a cycle through {nxt[0]!r}; a chip program is a feed-forward chain")
        chain.append(nxt[0])
        seen.add(nxt[0])
    if len(seen) != len(nodes) or len(edges) != len(chain) - 1:
        raise NIRError(f"nodes or edges outside the Input -> Output chain: {sorted(set(nodes) - seen) or edges}")
    return chain


def _plain(value: Any) -> Any:
    """A metadata value read back from HDF5 as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    return value.item() if isinstance(value, np.generic) else value


def _flat(node: nir.NIRNode, field: str, n: int, what: str) -> np.ndarray:
    """A node parameter as a float64 vector of length ``n`` (a scalar broadcasts)."""
    value = np.asarray(getattr(node, field), dtype=np.float64)
    if value.ndim == 0:
        value = np.full(n, float(value))
    if value.shape != (n,):
        raise NIRError(f"{what}.{field} has shape {value.shape}, the population has {n} neurons")
    return value


def from_nir(
    graph: nir.NIRGraph,
    *,
    dt: float | None = None,
    weight_scale: float = 1.0,
    ticks: int | None = None,
    reset: str | None = None,
    delay: int | None = None,
    obs_bound: Any = None,
    encoding: str | None = None,
    weight_bits: Any = None,
) -> ChipProgram:
    """A chip program from a NIR graph ``Input -> Affine/Linear -> LIF/IF -> ... -> Output``.

    A graph written by :func:`to_nir` carries its settings in ``metadata``; for any other
    graph they come from the options, with the defaults below. An option given explicitly
    overrides the metadata.

    :param graph: the NIR graph
    :param dt: tick duration in seconds for the discretisation (metadata, else 1 ms)
    :param weight_scale: chip units per NIR unit ``s`` (see the module docstring)
    :param ticks: ticks per inference (metadata, else 10)
    :param reset: ``"zero"`` (NIR's reset to ``v_reset``, the default) or ``"subtract"``
    :param delay: synaptic delay in ticks, 0 or 1 (metadata, else 1, the chip's)
    :param obs_bound: encoder bounds, ``n_inputs / 2`` values (metadata, else all ones)
    :param encoding: input spike generation (metadata, else ``"deterministic"``)
    :param weight_bits: weight width, one integer or one per projection (metadata, else 8):
        the scaled weights must lie in ``[-L, L]``, ``L = 2^(bits-1) - 1``
    :return: the chip program
    :raises NIRError: unsupported nodes, cycles or branches, mismatched sizes, weights that
        are beyond the weight width's range after scaling, ``v_reset`` differing between neurons,
        or settings that make no valid program
    """
    if not isinstance(graph, nir.NIRGraph):
        raise NIRError(f"from_nir expects a nir.NIRGraph, got {type(graph).__name__}")
    if not (np.isfinite(weight_scale) and weight_scale > 0):
        raise NIRError(f"weight_scale must be finite and positive, got {weight_scale!r}")
    settings = _settings(graph)
    dt = float(settings.pop("dt", DEFAULT_DT) if dt is None else dt)
    if not (np.isfinite(dt) and dt > 0):
        raise NIRError(f"dt must be finite and positive, got {dt!r}")
    options = {"ticks": ticks, "reset": reset, "delay": delay, "obs_bound": obs_bound, "encoding": encoding}
    settings.update({name: value for name, value in options.items() if value is not None})
    settings.setdefault("reset", "zero")  # NIR's reset, for graphs not made here
    if settings["reset"] not in RESET_MODES:
        raise NIRError(f"reset must be one of {RESET_MODES}, got {settings['reset']!r}")
    if settings.get("encoding", "deterministic") not in ENCODING_MODES:
        raise NIRError(f"encoding must be one of {ENCODING_MODES}, got {settings['encoding']!r}")
    chain = _chain(graph)
    body = chain[1:-1]
    if len(body) == 0 or len(body) % 2:
        raise NIRError(f"expected (Affine/Linear, LIF/IF) pairs between Input and Output, got {body}")
    bits = settings.get("weight_bits", 8) if weight_bits is None else weight_bits
    try:
        settings["weight_bits"] = check_weight_bits(np.asarray(bits).tolist(), len(body) // 2)
    except ValueError as exc:
        raise NIRError(str(exc)) from None
    n_in = int(np.prod(graph.nodes[chain[0]].input_type["input"]))
    populations = _populations(graph, body, n_in, settings["weight_bits"], dt, weight_scale)
    n_out, n_last = int(np.prod(graph.nodes[chain[-1]].output_type["output"])), populations[-1].weights.shape[0]
    if n_out != n_last:
        raise NIRError(f"the Output node has {n_out} neurons but the last population has {n_last}")
    if "v_reset" not in settings:
        settings["v_reset"] = _common_v_reset(populations)
    if "obs_bound" not in settings:
        if n_in % 2:
            raise NIRError(f"the Input has {n_in} neurons; the chip's signed code drives an even number (2 per dim)")
        settings["obs_bound"] = np.ones(n_in // 2, dtype=np.float32)
    settings.setdefault("lambdas", [weight_scale] * len(populations))
    return _program(populations, settings)


class _Population(NamedTuple):
    """One chip population read from an (Affine/Linear, LIF/IF) pair, and its ``v_reset`` per neuron."""

    weights: np.ndarray
    thresholds: np.ndarray
    alpha_decay: np.ndarray
    i_offset: np.ndarray
    v_reset: np.ndarray


def _settings(graph: nir.NIRGraph) -> dict[str, Any]:
    """The program settings a graph written by :func:`to_nir` carries (``dt`` and program fields; none for others)."""
    meta = {k: _plain(v) for k, v in (graph.metadata or {}).items()}
    if meta.get("format") != FORMAT_NAME:
        return {}
    settings = {k: meta[k] for k in METADATA_KEYS[1:] if k in meta}
    for f in fields_of(ChipProgram, SCALAR):  # list fields come back from HDF5 as arrays
        if isinstance(settings.get(f.name), np.ndarray):
            settings[f.name] = np.atleast_1d(settings[f.name]).tolist()
    if "v_reset" in settings:
        settings["v_reset"] = float(settings["v_reset"])
    return settings


def _populations(
    graph: nir.NIRGraph, body: list[str], n_in: int, bits: list[int], dt: float, weight_scale: float
) -> list[_Population]:
    """The chip populations of the graph's (Affine/Linear, LIF/IF) pairs, in order."""
    populations: list[_Population] = []
    n_pre = n_in
    for j in range(0, len(body), 2):
        wname, nname = body[j], body[j + 1]
        wnode, nnode = graph.nodes[wname], graph.nodes[nname]
        if not isinstance(wnode, _WEIGHT_NODES) or not isinstance(nnode, _NEURON_NODES):
            raise NIRError(
                f"expected an Affine/Linear node followed by a LIF/IF node, got {wname!r} "
                f"({type(wnode).__name__}) -> {nname!r} ({type(nnode).__name__})"
            )
        populations.append(_population(wname, wnode, nname, nnode, n_pre, bits[len(populations)], dt, weight_scale))
        n_pre = populations[-1].weights.shape[0]
    return populations


def _population(
    wname: str, wnode: nir.NIRNode, nname: str, nnode: nir.NIRNode, n_pre: int, bits: int, dt: float,
    weight_scale: float,
) -> _Population:
    """One chip population (see the module docstring for the mapping)."""
    w = np.asarray(wnode.weight, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != n_pre:
        raise NIRError(f"{wname}: weight of shape {w.shape} does not take the {n_pre} outputs before it")
    n = w.shape[0]
    bias = _flat(wnode, "bias", n, wname) if isinstance(wnode, nir.Affine) else np.zeros(n)
    thr = _flat(nnode, "v_threshold", n, nname)
    r = _flat(nnode, "r", n, nname)
    vr = _flat(nnode, "v_reset", n, nname)
    if isinstance(nnode, nir.LIF):
        tau = _flat(nnode, "tau", n, nname)
        if np.any(tau <= 0) or np.any(np.isinf(tau)):
            raise NIRError(f"{nname}: tau must be finite and positive (an infinite tau is an IF node)")
        alpha = _lif_alpha(tau, dt)
        factor = _lif_factor(tau, r, dt)
        offset = weight_scale * (bias + _flat(nnode, "v_leak", n, nname) / r)
    else:
        alpha = np.ones(n, dtype=np.float32)
        factor = dt * r
        offset = weight_scale * bias
    if np.any(factor <= 0) or not np.all(np.isfinite(factor)):
        raise NIRError(f"{nname}: the input factor (dt / tau * r, or dt * r) must be finite and positive")
    scaled = weight_scale * w
    q = np.rint(scaled)
    limit = weight_limit(bits)
    if np.any(np.abs(q) > limit):
        raise NIRError(
            f"{wname}: weights times weight_scale {weight_scale} reach {float(np.abs(scaled).max()):.4g}, "
            f"beyond [-{limit}, {limit}] at {bits}-bit weights; pass a smaller weight_scale"
        )
    if not np.array_equal(q, scaled):
        warnings.warn(f"{wname}: weights times weight_scale {weight_scale} are not integers; rounded to "
                      "the chip's int8 grid", UserWarning, stacklevel=4)
    return _Population(
        q.astype(np.int8), (weight_scale * thr / factor).astype(np.float32), alpha, offset.astype(np.float32),
        weight_scale * vr / factor,
    )


def _common_v_reset(populations: list[_Population]) -> float:
    """The one ``v_reset`` of every neuron of a graph (a chip program has one)."""
    resets = np.concatenate([p.v_reset for p in populations])
    if not np.all(resets == resets[0]):
        raise NIRError("v_reset differs between neurons; a chip program has one v_reset for all populations")
    return float(resets[0])


def _program(populations: list[_Population], settings: dict[str, Any]) -> ChipProgram:
    """The chip program of the populations and the settings, or a :class:`NIRError` saying why there is none."""
    for name in ("ticks", "delay"):
        if name in settings:
            settings[name] = int(settings[name])
    try:
        return ChipProgram(
            weights=[p.weights for p in populations], thresholds=[p.thresholds for p in populations],
            alpha_decay=[p.alpha_decay for p in populations], i_offset=[p.i_offset for p in populations],
            **settings,
        )
    except ChipProgramError:
        raise
    except ValueError as exc:
        raise NIRError(f"the NIR graph makes no valid chip program: {exc}") from None


def read_nir(path: str | os.PathLike, **options: Any) -> ChipProgram:
    """Read a chip program from a NIR file.

    :param path: the NIR (HDF5) file
    :param options: passed to :func:`from_nir` (``dt``, ``weight_scale``, ...)
    :return: the chip program
    :raises FileNotFoundError: no such file
    :raises NIRError: not a NIR file (truncated, foreign), or a graph that is no chip program
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NIR file at {path}")
    try:
        graph = nir.read(path)
    except Exception as exc:  # h5py, nir's asserts and KeyErrors: the file is not a readable NIR graph
        raise NIRError(f"{path}: not a readable NIR file ({type(exc).__name__}: {exc})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NIRError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    return from_nir(graph, **options)
