"""The fields of a chip program: their kinds, their checks, and what is derived from their one list.

:class:`~spiking_dqn.hardware.program.ChipProgram` declares each field once, with
:func:`program_field`, whose metadata says what kind of value the field holds:

* :data:`PER_PROJECTION`: one array per projection (``weights``) or per population (the
  neuron parameters; projection ``k`` feeds population ``k``): file arrays ``<name>_<k>``,
  nodes of a NIR graph;
* :data:`ARRAY`: one array (``obs_bound``): file array ``<name>``, NIR metadata;
* :data:`SCALAR`: a JSON value (a string, a number, a bool or a list of numbers): file
  metadata, NIR metadata;
* :data:`OPTIONAL_ARRAYS`: ``None`` or one entry per population or projection, each ``None``
  or an array: file metadata (which entries there are) and arrays ``<name>_<k>``; NIR has
  no primitive for them.

Equality (:func:`fields_equal`), the ``repr`` (:func:`fields_repr`), the search key
(:func:`fields_digest`), the file format (:mod:`spiking_dqn.hardware.program_file`) and the
NIR metadata (:mod:`spiking_dqn.export`) iterate ``dataclasses.fields``, so a field is
covered by each of them once it is declared.

``ChipProgram.state_levels`` is ``None`` (float32 membranes everywhere) or one entry per
population (hidden layers, then the output), each ``None`` or a sorted, strictly
increasing, finite float32 array of ``2^n`` values (``1 <= n <= MAX_STATE_BITS``): after
each tick's update, threshold comparison and reset, the membrane kept is the nearest
level (ties to the lower, :func:`spiking_dqn.semantics.lif.nearest_level`).

``ChipProgram.tick_gain`` is ``None`` or one entry per projection, each ``None`` or a
finite float32 array of shape ``(ticks,)``: ``g[t]`` multiplies the synaptic input of that
projection arriving at tick ``t``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from spiking_dqn.semantics.checks import check_real
from spiking_dqn.semantics.levels import MAX_STATE_BITS, check_levels_array, readonly
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, INT8_WEIGHT_LIMIT, check_weight_bits, weight_limit

# Size limits of a program. They bound what a program (and a file claiming to be one) can
# make a backend allocate; they are far above any network this project deploys.
#: Ticks per inference. The paper's programs use 10 and 20, the reference trace 1001; at
#: 1 ms a tick, 100_000 ticks are 100 s of chip time per observation, and the recorded
#: (ticks, n) train of a 250-neuron core alone is then 100 MB in float32. A program beyond
#: it is a damaged file or a mistake, not a network (10**9 ticks would exhaust memory).
MAX_TICKS = 100_000
#: Projections (layers) per program: the shipped programs have 3. A bound keeps a damaged
#: ``n_projections`` from building huge lists before anything is read.
MAX_PROJECTIONS = 64
#: Neurons per population, the input population included: 152 processing elements x 250
#: neurons (py-spinnaker2's default ``max_atoms_per_core``) = 38_000, the most one
#: SpiNNaker2 chip holds at that default, so no larger population can be deployed to one.
MAX_POPULATION_NEURONS = 152 * 250
#: Entries of one weight matrix ``(n_post, n_pre)``: 2**24 int8 weights are 16 MiB in the
#: file and 64 MiB as the emulator's float32 copy (the shipped programs have under 20_000).
MAX_PROJECTION_WEIGHTS = 2**24
#: Bytes of one array of a chip program file (from its header: shape x item size): the
#: largest weight matrix in int8; any other array of a valid program is far smaller.
MAX_ARRAY_BYTES = MAX_PROJECTION_WEIGHTS
#: Bytes of a chip program file's metadata entry (a shipped program's is under 2 KB).
MAX_METADATA_BYTES = 2**20
#: Nesting depth of a chip program file's metadata JSON (a valid one has 2: the object, its lists).
MAX_METADATA_DEPTH = 4

#: One array per projection or population (file arrays ``<name>_<k>``).
PER_PROJECTION = "per_projection"
#: One array (file array ``<name>``).
ARRAY = "array"
#: A JSON value (file metadata).
SCALAR = "scalar"
#: ``None`` or one entry (``None`` or an array) per population or projection.
OPTIONAL_ARRAYS = "optional_arrays"


# ---------------------------------------------------------------------- array sizes


def check_projection_size(shape: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` when a weight matrix of ``shape`` exceeds the program limits.

    :param shape: ``(n_post, n_pre)``
    :param what: the matrix's name in the message
    """
    if any(n > MAX_POPULATION_NEURONS for n in shape):
        raise ValueError(
            f"{what} has shape {tuple(shape)}: populations have at most MAX_POPULATION_NEURONS = "
            f"{MAX_POPULATION_NEURONS} neurons (one SpiNNaker2 chip at 250 neurons per core)"
        )
    if math.prod(shape) > MAX_PROJECTION_WEIGHTS:
        raise ValueError(
            f"{what} has shape {tuple(shape)}: a projection has at most MAX_PROJECTION_WEIGHTS = "
            f"{MAX_PROJECTION_WEIGHTS} weights"
        )


def check_weights_shape(shape: tuple[int, ...], what: str) -> None:
    """A file's weight matrix: a 2-D one within the projection limits (other shapes fail on construction)."""
    if len(shape) == 2:
        check_projection_size(shape, what)


def _population_shape(shape: tuple[int, ...], what: str) -> None:
    """A file's population array (or the encoder bounds): at most one entry per neuron of a population."""
    if math.prod(shape) > MAX_POPULATION_NEURONS:
        raise ValueError(
            f"{what} has shape {shape}: populations have at most MAX_POPULATION_NEURONS = "
            f"{MAX_POPULATION_NEURONS} neurons"
        )


def _entry_shape(shape: tuple[int, ...], what: str) -> None:
    """A file's state levels or tick gains: at most ``2^MAX_STATE_BITS`` levels or ``MAX_TICKS`` gains."""
    if math.prod(shape) > max(2**MAX_STATE_BITS, MAX_TICKS):
        raise ValueError(f"{what} is too large")


# ---------------------------------------------------------------------- declaring fields


def program_field(
    kind: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    absent: Any = dataclasses.MISSING,
    required_since: int | None = 1,
    check_shape: Callable[[tuple[int, ...], str], None] | None = None,
    show: Callable[[str, Any], str | None] | None = None,
) -> Any:
    """A ``dataclasses.field`` of a chip program, with what its kind derives.

    :param kind: :data:`PER_PROJECTION`, :data:`ARRAY`, :data:`SCALAR` or :data:`OPTIONAL_ARRAYS`
    :param default: the dataclass default
    :param default_factory: the dataclass default factory
    :param absent: the value of a file that lacks the field (a file must hold it otherwise)
    :param required_since: the first file format version that must hold it (``None``: none)
    :param check_shape: checks an array's shape read from a file header before it is read,
        ``(shape, name) -> None`` raising ``ValueError`` (default by kind)
    :param show: the field's part of the ``repr``, ``(name, value) -> str or None`` (``None``
        leaves it out); by default ``name=value`` for scalars and nothing for arrays
    """
    if check_shape is None:
        check_shape = _entry_shape if kind == OPTIONAL_ARRAYS else _population_shape
    if show is None:
        show = _hidden if kind in (PER_PROJECTION, ARRAY) else _shown
    if kind == OPTIONAL_ARRAYS and absent is dataclasses.MISSING:
        absent, required_since = None, None
    metadata = {
        "kind": kind, "absent": absent, "required_since": required_since, "check_shape": check_shape, "show": show,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _hidden(name: str, value: Any) -> None:
    return None


def _shown(name: str, value: Any) -> str:
    return f"{name}={value!r}"


def fields_of(program: Any, *kinds: str) -> list[dataclasses.Field]:
    """The fields of a program (class or instance) of the given kinds, in declaration order."""
    return [f for f in dataclasses.fields(program) if f.metadata["kind"] in kinds]


def required_in_file(field: dataclasses.Field, version: int) -> bool:
    """Whether a file of format ``version`` must hold the field."""
    since = field.metadata["required_since"]
    return field.metadata["absent"] is dataclasses.MISSING or (since is not None and version >= since)


# ---------------------------------------------------------------------- derived from the field list


def values_equal(a: Any, b: Any) -> bool:
    """Whether two field values are equal: arrays by dtype, shape and contents; lists entry by entry."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (
            isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
            and all(values_equal(x, y) for x, y in zip(a, b))
        )
    return bool(a == b)


def fields_equal(a: Any, b: Any) -> bool:
    """Whether two programs are equal in every field."""
    return all(values_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


def _digest_value(value: Any, h: Any) -> None:
    if value is None:
        h.update(b"N")
    elif isinstance(value, np.ndarray):
        h.update(f"A{value.dtype.str}{value.shape}:".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}:".encode())
        for entry in value:
            _digest_value(entry, h)
    else:
        text = json.dumps(value)
        h.update(f"S{len(text)}:{text}".encode())


def fields_digest(program: Any) -> str:
    """SHA-256 (hex) of every field of a program: two programs that differ in any field differ here."""
    h = hashlib.sha256(type(program).__name__.encode())
    for f in dataclasses.fields(program):
        h.update(f"|{f.name}=".encode())
        _digest_value(getattr(program, f.name), h)
    return h.hexdigest()


def fields_repr(program: Any, head: str) -> str:
    """``Name(head, field=..., ...)``: each field as its ``show`` writes it (arrays are left out)."""
    shown = (f.metadata["show"](f.name, getattr(program, f.name)) for f in dataclasses.fields(program))
    parts = [head, *(part for part in shown if part is not None)]
    return f"{type(program).__name__}({', '.join(parts)})"


# ---------------------------------------------------------------------- checks of the fields


def check_weights(value: Any) -> list[np.ndarray]:
    """``ChipProgram.weights`` as readonly int8 copies: 2-D, within the limits, chained layer to layer.

    :raises ValueError: not a non-empty list of int8 matrices within the limits that chain
    """
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ValueError("weights must be a non-empty list of int8 arrays, one per projection")
    if len(value) > MAX_PROJECTIONS:
        raise ValueError(f"a program has at most MAX_PROJECTIONS = {MAX_PROJECTIONS} projections, got {len(value)}")
    weights = []
    for k, w in enumerate(value):
        if not isinstance(w, np.ndarray):
            raise ValueError(f"weights[{k}] must be a numpy int8 array, got {type(w).__name__}")
        if w.dtype != np.int8:
            raise ValueError(
                f"weights[{k}] must have dtype int8, got {w.dtype}; quantize with "
                "spiking_dqn.quantization.quantize_weights (values are never cast silently)"
            )
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weights[{k}] must be a non-empty 2-D (n_post, n_pre) matrix, got shape {w.shape}")
        check_projection_size(w.shape, f"weights[{k}]")
        if w.size and int(w.min()) < -INT8_WEIGHT_LIMIT:
            raise ValueError(
                f"weights[{k}] contains -128; chip weights must be in [-{INT8_WEIGHT_LIMIT}, {INT8_WEIGHT_LIMIT}]"
            )
        weights.append(readonly(w.copy()))
    for k in range(1, len(weights)):
        if weights[k].shape[1] != weights[k - 1].shape[0]:
            raise ValueError(
                f"layer sizes do not chain: weights[{k - 1}] has {weights[k - 1].shape[0]} post neurons "
                f"but weights[{k}] expects {weights[k].shape[1]} pre neurons"
            )
    return weights


def check_widths(weights: list[np.ndarray], value: Any) -> list[int]:
    """``ChipProgram.weight_bits`` as one width per projection (``None``: 8), each holding its weights.

    :raises ValueError: an invalid width, or a weight beyond its projection's range
    """
    bits = check_weight_bits(DEFAULT_WEIGHT_BITS if value is None else value, len(weights))
    for k, (w, b) in enumerate(zip(weights, bits)):
        limit = weight_limit(b)
        peak = int(np.abs(w.astype(np.int16)).max())
        if peak > limit:
            raise ValueError(
                f"weights[{k}] has a weight of magnitude {peak}, outside [-{limit}, {limit}], the range of "
                f"weight_bits[{k}] = {b} (L = 2^(bits-1) - 1); quantize on a grid of that width"
            )
    return bits


def _population_array(values: Any, n: int, what: str, k: int) -> np.ndarray:
    """A float32 copy of one population's parameter, checked to have shape ``(n,)``."""
    try:
        array = np.array(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}[{k}] must be a numeric array of shape ({n},): {exc}") from None
    if array.shape != (n,):
        raise ValueError(f"{what}[{k}] must have shape ({n},) to match population {k}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}[{k}] contains NaN or infinite values")
    return readonly(array)


def check_population_arrays(name: str, values: Any, sizes: list[int]) -> list[np.ndarray]:
    """A neuron parameter (``thresholds``, ``alpha_decay``, ``i_offset``) as readonly finite float32 arrays.

    :param name: the field
    :param values: one array per population
    :param sizes: the populations' sizes
    :raises ValueError: not one array of the population's shape per population, not finite,
        thresholds not positive or decays outside [0, 1]
    """
    if not isinstance(values, (list, tuple)) or len(values) != len(sizes):
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise ValueError(f"{name} must be a list with one array per population ({len(sizes)}), got {got}")
    arrays = [_population_array(v, n, name, k) for k, (v, n) in enumerate(zip(values, sizes))]
    for k, array in enumerate(arrays):
        if name == "thresholds" and np.any(array <= 0):
            raise ValueError(f"thresholds[{k}] must be positive, got min {float(array.min())}")
        if name == "alpha_decay" and (np.any(array < 0) or np.any(array > 1)):
            raise ValueError(
                f"alpha_decay[{k}] must be in [0, 1], got range [{float(array.min())}, {float(array.max())}]"
            )
    return arrays


def check_obs_bound(value: Any, n_inputs: int) -> np.ndarray | None:
    """``ChipProgram.obs_bound`` as a readonly float32 array that drives ``n_inputs`` input neurons, or ``None``.

    ``None``: the program has no observation encoder; it runs input spike trains only.

    :raises ValueError: not 1-D, not finite and positive, or ``2 * size != n_inputs``
    """
    if value is None:
        return None
    bound = np.array(value, dtype=np.float32)
    if bound.ndim != 1 or bound.size == 0:
        raise ValueError(f"obs_bound must be a non-empty 1-D array, got shape {bound.shape}")
    if not np.all(np.isfinite(bound)) or np.any(bound <= 0):
        raise ValueError(f"obs_bound must be finite and positive in every dimension, got {bound}")
    if n_inputs != 2 * bound.size:
        raise ValueError(
            f"the first projection has {n_inputs} pre neurons but an observation of dimension "
            f"{bound.size} drives {2 * bound.size} input neurons (signed two-neuron code)"
        )
    return readonly(bound)


def check_encoding_alpha(alpha: Any, encoding: str) -> float:
    """``ChipProgram.encoding_alpha``: a number in [0, 1), and 0 unless the encoding is hybrid."""
    check_real(alpha, "encoding_alpha", what="a number in [0, 1)")
    if not (np.isfinite(alpha) and 0.0 <= alpha < 1.0):
        raise ValueError(f"encoding_alpha (hybrid coding) must be in [0, 1), got {alpha!r}")
    if alpha != 0.0 and encoding != "hybrid":
        raise ValueError(f"encoding_alpha is hybrid coding's; it must be 0 with encoding={encoding!r}")
    return float(alpha)


def check_lambdas(value: Any, n_projections: int) -> list[float]:
    """``ChipProgram.lambdas``: one finite positive float per projection (all ones when empty)."""
    lambdas = list(value) if value is not None else []
    if len(lambdas) == 0:
        lambdas = [1.0] * n_projections
    if len(lambdas) != n_projections:
        raise ValueError(f"lambdas must have one value per projection ({n_projections}), got {len(lambdas)}")
    try:
        lambdas = [float(lam) for lam in lambdas]
    except (TypeError, ValueError):
        raise ValueError(f"lambdas must be numbers, got {value!r}") from None
    if not all(np.isfinite(lam) and lam > 0 for lam in lambdas):
        raise ValueError(f"lambdas must be finite and positive, got {lambdas}")
    return lambdas


def _per_entry(
    value: Any, count: int, field: str, unit: str, check: Callable[[Any, str], np.ndarray]
) -> list[np.ndarray | None] | None:
    """A field holding ``None`` or one entry (``None`` or an array) per population or projection, normalised.

    :param value: the field as given
    :param count: entries it needs
    :param field: the field's name, for the messages
    :param unit: ``population`` or ``projection``
    :param check: checks one entry (given it and its name, ``field[k]``) and returns the readonly array
    :return: ``None`` when the field is ``None`` or every entry is
    :raises ValueError: not a list of ``count`` entries, or what ``check`` raises
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != count:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"{field} must be None or a list with one entry per {unit} ({count}), got {got}")
    out = [None if entry is None else check(entry, f"{field}[{k}]") for k, entry in enumerate(value)]
    return None if all(entry is None for entry in out) else out


def check_state_levels(value: Any, n_populations: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.state_levels`` normalised: ``None``, or one readonly float32 array or ``None`` per population.

    :param value: the field as given
    :param n_populations: populations of the program (hidden layers and output)
    :raises ValueError: not one entry per population, or an entry that is not sorted,
        strictly increasing, finite float32 values of a power-of-two count (2 .. 2^16)
    """
    return _per_entry(value, n_populations, "state_levels", "population", check_levels_array)


def check_tick_gain(value: Any, n_projections: int, ticks: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.tick_gain`` normalised: ``None``, or one readonly float32 ``(ticks,)`` array or ``None`` per projection.

    :param value: the field as given
    :param n_projections: projections of the program
    :param ticks: the program's ticks
    :raises ValueError: not one entry per projection, or a gain array of the wrong length or not finite
    """

    def check(entry: Any, where: str) -> np.ndarray:
        array = np.array(entry, dtype=np.float32)
        if array.shape != (ticks,):
            raise ValueError(f"{where} must have shape (ticks,) = ({ticks},), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where} must be finite")
        return readonly(array)

    return _per_entry(value, n_projections, "tick_gain", "projection", check)


def check_model_digest(value: Any) -> str | None:
    """``ChipProgram.model_digest``: ``None`` or a SHA-256 hex digest (64 lowercase hex digits).

    :raises ValueError: anything else
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"model_digest must be None or 64 lowercase hex digits (SHA-256), got {value!r}")
    return value
