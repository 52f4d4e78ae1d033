"""NIR import of chip programs: :func:`from_nir` (a graph) and :func:`read_nir` (a NIR file).

The mapping is :mod:`spiking_dqn.nir_format`'s. A graph written by
:func:`spiking_dqn.export.to_nir` carries its settings (``dt`` included) in its metadata;
any other graph is read at the ``dt`` its caller names.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import nir
import numpy as np

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_fields import SCALAR, fields_of
from spiking_dqn.hardware.program_file import FORMAT_NAME, ChipProgramError
from spiking_dqn.nir_format import (
    DIGEST_KEY,
    METADATA_FIELDS,
    NEURON_NODES,
    WEIGHT_NODES,
    NIRError,
    check_nir_file,
    lif_alpha,
    lif_factor,
)
from spiking_dqn.semantics.encoding import ENCODING_MODES
from spiking_dqn.semantics.lif import RESET_MODES
from spiking_dqn.semantics.widths import check_weight_bits, weight_limit


def _chain(graph: nir.NIRGraph) -> list[str]:
    """The node names of a linear graph from its one Input to its one Output."""
    nodes, edges = graph.nodes, list(graph.edges)
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NIRError(f"edge {a!r} -> {b!r} names a node {end!r} that is not in the graph")
    unsupported = sorted({f"{name} ({type(node).__name__})" for name, node in nodes.items()
                          if not isinstance(node, (nir.Input, nir.Output, nir.Delay, *WEIGHT_NODES, *NEURON_NODES))})
    if unsupported:
        raise NIRError(
            "unsupported NIR node types: " + ", ".join(unsupported)
            + "; a chip program is Input -> [Delay ->] Affine/Linear -> LIF/IF -> ... -> Output"
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
    if not np.all(np.isfinite(value)) and field != "tau":  # an infinite tau has its own message
        raise NIRError(f"{what}.{field} holds non-finite values (NaN or infinity)")
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
    inputs: str | None = None,
) -> ChipProgram:
    """A chip program from a NIR graph ``Input -> Affine/Linear -> LIF/IF -> ... -> Output``.

    A graph written by :func:`to_nir` carries its settings in ``metadata``; for any other
    graph they come from the options, with the defaults below. An option given explicitly
    overrides the metadata.

    :param graph: the NIR graph
    :param dt: tick duration in seconds for the discretisation (metadata); a graph without
        this package's metadata carries no dt (NIR's equations are continuous-time) and
        needs it: snnTorch 1.0 writes its LIF nodes at ``dt = 1e-4`` (``tau = dt / (1 - beta)``,
        ``r = tau / dt``), Norse at its import step (``1e-3`` by default)
    :param weight_scale: chip units per NIR unit ``s`` (see :mod:`spiking_dqn.nir_format`); an
        IF node integrates ``dt * r * I`` per tick for any ``r`` (NIR's ``dv/dt = R I``)
    :param ticks: ticks per inference (metadata, else 10)
    :param reset: ``"zero"`` (NIR's reset to ``v_reset``, the default) or ``"subtract"``
    :param delay: synaptic delay in ticks, 0 or 1 (metadata, else the graph's ``Delay`` nodes: 1
        with a one-tick ``Delay`` before every Affine/Linear node, 0 without any)
    :param obs_bound: encoder bounds, ``n_inputs / 2`` values (metadata, else all ones)
    :param encoding: input spike generation (metadata, else ``"deterministic"``)
    :param weight_bits: weight width, one integer or one per projection (metadata, else 8):
        the scaled weights must lie in ``[-L, L]``, ``L = 2^(bits-1) - 1``
    :param inputs: ``"observations"`` (the chip's signed observation encoder, two input
        neurons per dimension) or ``"spikes"`` (no encoder: the program runs input spike
        trains only, ``run_spikes``, e.g. the NIR paper's one-input ``lif_norse.nir``);
        default: the metadata's, else observations for an even number of inputs
    :return: the chip program
    :raises NIRError: unsupported nodes, cycles or branches, mismatched sizes, weights that
        are beyond the weight width's range after scaling, ``v_reset`` differing between neurons,
        or settings that make no valid program (every failure of the conversion is a ``NIRError``)
    """
    options = {"dt": dt, "weight_scale": weight_scale, "ticks": ticks, "reset": reset, "delay": delay,
               "obs_bound": obs_bound, "encoding": encoding, "weight_bits": weight_bits, "inputs": inputs}
    try:
        with np.errstate(all="ignore"):
            return _graph_program(graph, **options)
    except NIRError as exc:  # one line, even where it shows a hostile value
        if "\n" in str(exc):
            raise NIRError(" ".join(str(exc).split())) from None
        raise
    except (ChipProgramError, ArithmeticError, TypeError, KeyError, ValueError, IndexError, AttributeError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise NIRError(f"the NIR graph makes no chip program ({reason})") from None


def _graph_program(
    graph: nir.NIRGraph, *, dt: Any, weight_scale: Any, ticks: Any, reset: Any, delay: Any, obs_bound: Any,
    encoding: Any, weight_bits: Any, inputs: Any,
) -> ChipProgram:
    """:func:`from_nir`'s conversion (its errors other than :class:`NIRError` are mapped there)."""
    if not isinstance(graph, nir.NIRGraph):
        raise NIRError(f"from_nir expects a nir.NIRGraph, got {type(graph).__name__}")
    if not (np.isfinite(weight_scale) and weight_scale > 0):
        raise NIRError(f"weight_scale must be finite and positive, got {weight_scale!r}")
    settings = _settings(graph)
    digest = settings.pop(DIGEST_KEY, None)
    ours = bool(settings)
    overridden = any(v is not None for v in (dt, ticks, reset, delay, obs_bound, encoding, weight_bits, inputs))
    if digest is not None and (overridden or weight_scale != 1.0):
        from_nir(graph)  # the graph's own program first, checked against its checksum
    dt = _tick(settings.pop("dt", None), dt)
    if not (np.isfinite(dt) and dt > 0):
        raise NIRError(f"dt must be finite and positive, got {dt!r}")
    options = {"ticks": ticks, "reset": reset, "delay": delay, "obs_bound": obs_bound, "encoding": encoding}
    settings.update({name: value for name, value in options.items() if value is not None})
    for name in ("ticks", "delay", "seed"):  # metadata or options: whole numbers, never rounded
        if settings.get(name) is not None:
            settings[name] = _integral(settings[name], name)
    settings.setdefault("reset", "zero")  # NIR's reset, for graphs not made here
    if settings["reset"] not in RESET_MODES:
        raise NIRError(f"reset must be one of {RESET_MODES}, got {settings['reset']!r}")
    if settings.get("encoding", "deterministic") not in ENCODING_MODES:
        raise NIRError(f"encoding must be one of {ENCODING_MODES}, got {settings['encoding']!r}")
    chain = _chain(graph)
    body, node_delay = _synaptic_delay(graph, chain[1:-1], dt)
    if delay is None and node_delay and settings.get("delay", 1) != 1:
        raise NIRError(f"the graph's Delay nodes make a one-tick delay but its metadata says delay {settings['delay']}")
    settings.setdefault("delay", node_delay)  # the metadata's or the option's first (files written before Delay nodes)
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
    settings["obs_bound"] = _input_code(settings.get("obs_bound"), obs_bound is not None, inputs, n_in, ours)
    settings.setdefault("lambdas", [weight_scale] * len(populations))
    program = _program(populations, settings)
    if digest is not None and not overridden and weight_scale == 1.0 and program.digest() != digest:
        raise NIRError(
            "the NIR graph is damaged: its content does not match the checksum written with it (metadata "
            f"{DIGEST_KEY!r}); export the program again"
        )
    return program


def _synaptic_delay(graph: nir.NIRGraph, body: list[str], dt: float) -> tuple[list[str], int]:
    """The chain between Input and Output without its Delay nodes, and the synaptic delay in ticks they make.

    A chip program delays every projection's spikes by one tick (a ``Delay`` of ``dt`` before
    each Affine/Linear node, as :func:`spiking_dqn.export.to_nir` writes it) or none (no
    ``Delay`` node: NIR's spikes arrive at once, so within the tick).
    """
    delays = [name for name in body if isinstance(graph.nodes[name], nir.Delay)]
    rest = [name for name in body if name not in delays]
    if not delays:
        return rest, 0
    n_projections = sum(isinstance(graph.nodes[name], WEIGHT_NODES) for name in rest)
    after = [body[i + 1] if i + 1 < len(body) else None for i, name in enumerate(body) if name in delays]
    followed = all(nxt is not None and isinstance(graph.nodes[nxt], WEIGHT_NODES) for nxt in after)
    if len(delays) != n_projections or not followed:
        raise NIRError(
            f"Delay nodes {delays}: a chip program delays the spikes of every projection by one tick or of none, "
            "so a Delay node precedes each Affine/Linear node or none does"
        )
    for name in delays:
        value = np.asarray(graph.nodes[name].delay, dtype=np.float64)
        if not np.allclose(value, dt, rtol=1e-9, atol=0.0):
            raise NIRError(
                f"{name}: a delay of {np.unique(value).tolist()} s is not one tick (dt = {dt} s); the chip delays "
                "spikes by 0 or 1 tick"
            )
    return rest, 1


def _input_code(bound: Any, given: bool, inputs: str | None, n_in: int, ours: bool) -> Any:
    """The program's encoder bounds (``None``: no observation encoder), see :func:`from_nir`'s ``inputs``."""
    if inputs not in (None, "observations", "spikes"):
        raise NIRError(f"inputs must be 'observations' or 'spikes', got {inputs!r}")
    if inputs == "spikes":
        if given:
            raise NIRError("obs_bound sets an observation encoder, which inputs='spikes' leaves out: pass one of them")
        return None
    if bound is not None or (ours and inputs is None):  # a graph of to_nir without obs_bound has no encoder
        return bound
    if n_in % 2:
        raise NIRError(
            f"the Input has {n_in} neurons; the chip's signed observation encoder drives an even number (2 per "
            "observation dimension): pass inputs='spikes' for a program driven by input spike trains (run_spikes) "
            "without an observation encoder"
        )
    return np.ones(n_in // 2, dtype=np.float32)


def _tick(graph_dt: Any, dt: float | None) -> float:
    """The tick of the discretisation: ``dt`` when given, else the graph's own (metadata); refused when neither."""
    if dt is not None:
        return float(dt)
    if graph_dt is None:
        raise NIRError(
            "the graph carries no dt (it was not written by spiking_dqn.export.to_nir; NIR's equations are "
            "continuous-time): pass the tick its writer discretised with, from_nir(graph, dt=...) or "
            "read_nir(path, dt=...); snnTorch 1.0 writes LIF nodes at dt = 1e-4 s (tau = dt / (1 - beta), "
            "r = tau / dt), Norse at its own import step (1e-3 s by default)"
        )
    return float(graph_dt)


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
        if DIGEST_KEY in meta:
            raise NIRError(
                f"the NIR graph is damaged: it carries this package's checksum (metadata {DIGEST_KEY!r}) but its "
                f"format tag is {meta.get('format')!r}, not {FORMAT_NAME!r}; export the program again"
            )
        return {}
    settings = {k: meta[k] for k in ("dt", *METADATA_FIELDS, DIGEST_KEY) if k in meta}
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
        if not isinstance(wnode, WEIGHT_NODES) or not isinstance(nnode, NEURON_NODES):
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
    if not np.all(np.isfinite(w)):
        raise NIRError(f"{wname}: the weights hold non-finite values (NaN or infinity)")
    n = w.shape[0]
    bias = _flat(wnode, "bias", n, wname) if isinstance(wnode, nir.Affine) else np.zeros(n)
    thr = _flat(nnode, "v_threshold", n, nname)
    r = _flat(nnode, "r", n, nname)
    vr = _flat(nnode, "v_reset", n, nname)
    if isinstance(nnode, nir.LIF):
        tau = _flat(nnode, "tau", n, nname)
        if not (np.all(tau > 0) and np.all(np.isfinite(tau))):
            raise NIRError(f"{nname}: tau must be finite and positive (an infinite tau is an IF node)")
        alpha = lif_alpha(tau, dt)
        factor = lif_factor(tau, r, dt)
        offset = weight_scale * (bias + _flat(nnode, "v_leak", n, nname) / r)
    else:
        alpha = np.ones(n, dtype=np.float32)
        factor = dt * r
        if np.all(r == 1.0) and dt != 1.0:
            warnings.warn(
                f"{nname}: an IF node with r = 1 integrates dt * r * I = {dt:g} * I per tick at dt = {dt:g} s "
                f"(NIR's dv/dt = R I; its thresholds are {1 / dt:g} times the graph's in chip units); snnTorch, "
                f"Norse and sinabs write r = 1 for an IF that adds I per step: for that reading set the node's "
                f"r to 1 / dt = {1 / dt:g} before importing", UserWarning, stacklevel=4)
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
    try:
        return ChipProgram(
            weights=[p.weights for p in populations], thresholds=[p.thresholds for p in populations],
            alpha_decay=[p.alpha_decay for p in populations], i_offset=[p.i_offset for p in populations],
            **settings,
        )
    except (ChipProgramError, ValueError, TypeError) as exc:
        raise NIRError(f"the NIR graph makes no valid chip program: {exc}") from None


def _integral(value: Any, name: str) -> int:
    """A setting that must be a whole number (``ticks``, ``delay``, ``seed``), or a :class:`NIRError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise NIRError(f"{name} must be an integer, got {value!r}")
    if not (np.isfinite(value) and float(value).is_integer()):
        raise NIRError(f"{name} must be an integer, got {value!r}")
    return int(value)


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
        check_nir_file(path)  # links, external storage and sizes, from the headers only
        graph = nir.read(path)
    except NIRError as exc:
        raise NIRError(f"{path}: {exc}") from None
    except Exception as exc:  # h5py, nir's asserts and KeyErrors: the file is not a readable NIR graph
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise NIRError(f"{path}: not a readable NIR file ({reason})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NIRError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    return from_nir(graph, **options)
