"""The chip program: a frozen, plain-data description of a deployed spiking Q-network.

A :class:`ChipProgram` holds everything a backend needs to run the network and nothing
else: the integer weight matrices (stored as int8, each projection at its own bit width,
:attr:`ChipProgram.weight_bits`), the neuron parameters of every population, the number of
ticks, the synaptic delay and the input encoding. It is what
:func:`spiking_dqn.quantization.quantize_network` builds, what the emulator and the
SpiNNaker2 backend execute, and what is saved next to a trained agent.

File format: a single ``.npz`` archive readable with ``np.load(path, allow_pickle=False)``,
holding the arrays ``weights_<k>``, ``thresholds_<k>``, ``alpha_decay_<k>``,
``i_offset_<k>`` (one per projection / population, ``k = 0 .. n - 1``), ``obs_bound`` and
``metadata``, a 0-d unicode array with a JSON object::

    {"format": "spiking-dqn-chip-program", "format_version": 2, "n_projections": n,
     "reset": ..., "v_reset": ..., "ticks": ..., "delay": ..., "encoding": ...,
     "seed": ..., "lambdas": [...], "centered_readout": ..., "encoding_alpha": ...,
     "weight_bits": [...]}

Format versions: 2 adds ``weight_bits`` (one integer per projection, 2..8; required in a
version-2 file). Version-1 files (no ``weight_bits``) load as 8-bit programs, which they
are: version 1 only ever held weights in [-127, 127].

Weight bit widths: projection ``k`` at ``weight_bits[k] = b`` holds integers in
``[-L, L]`` with ``L = weight_limit(b) = 2^(b-1) - 1`` (8 bits: +-127, 5: +-15, 4: +-7,
2: {-1, 0, 1}, ternary). The weights are stored as int8 whatever the width; the width is
what the target chip must hold, and what :func:`weight_memory_bytes` counts.

Limits: every program keeps to :data:`MAX_TICKS`, :data:`MAX_PROJECTIONS`,
:data:`MAX_POPULATION_NEURONS` and :data:`MAX_PROJECTION_WEIGHTS` (checked on
construction), and :meth:`ChipProgram.load` checks the metadata and the shape of every
array, read from its header, before it reads any array, so a damaged or crafted file
cannot make it (or a backend) allocate without bound.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spiking_dqn.semantics.levels import MAX_STATE_BITS, state_bits
from spiking_dqn.semantics.widths import (
    DEFAULT_WEIGHT_BITS,
    INT8_WEIGHT_LIMIT,
    MAX_WEIGHT_BITS,
    MIN_WEIGHT_BITS,
    check_weight_bits,
    weight_limit,
    weight_memory_bytes,
)
from spiking_dqn.hardware.program_fields import (
    check_state_levels,
    check_tick_gain,
    optional_arrays_equal,
)

FORMAT_NAME = "spiking-dqn-chip-program"
FORMAT_VERSION = 2
RESET_MODES: tuple[str, ...] = ("subtract", "zero")
#: Input spike generation: accumulator trains or seeded Bernoulli draws.
EncodingMode = Literal["deterministic", "poisson"]
ENCODING_MODES: tuple[str, ...] = ("deterministic", "poisson", "hybrid")

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
# What reading a damaged zip archive can raise (zipfile, numpy's .npy reader).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError)

ArrayLike = np.ndarray | Sequence[float] | float


def _entry_shape(data: Any, name: str) -> tuple[int, ...]:
    """The shape of array ``name`` of an open ``.npz`` archive, read from its ``.npy`` header only.

    :param data: the ``np.load`` result (an ``NpzFile``)
    :param name: the array's name
    :raises ValueError: an unreadable header (reported as a damaged archive by the loader)
    """
    with data.zip.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, _ = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"array {name!r} has an unsupported .npy format version {version}")
    return tuple(int(n) for n in shape)


class ChipProgramError(ValueError):
    """A chip program file that cannot be loaded (corrupt, foreign, too new or invalid)."""


def _check_projection_size(shape: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` when a weight matrix of ``shape`` exceeds the program limits.

    :param shape: ``(n_post, n_pre)``
    :param what: the matrix's name in the message
    """
    if any(n > MAX_POPULATION_NEURONS for n in shape):
        raise ValueError(
            f"{what} has shape {tuple(shape)}: populations have at most MAX_POPULATION_NEURONS = "
            f"{MAX_POPULATION_NEURONS} neurons (one SpiNNaker2 chip at 250 neurons per core)"
        )
    if int(np.prod(shape, dtype=np.int64)) > MAX_PROJECTION_WEIGHTS:
        raise ValueError(
            f"{what} has shape {tuple(shape)}: a projection has at most MAX_PROJECTION_WEIGHTS = "
            f"{MAX_PROJECTION_WEIGHTS} weights"
        )


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


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
    return _readonly(array)


@dataclass(frozen=True, eq=False)
class ChipProgram:
    """A spiking Q-network as deployed on the chip.

    Populations are the hidden layers in order, then the output (readout) population;
    projection ``k`` feeds population ``k``. The input population (``2 * obs_dim`` spike
    sources) has no parameters.

    :param weights: one int8 matrix per projection, shape ``(n_post, n_pre)``, values in
        ``[-L_k, L_k]``, ``L_k = weight_limit(weight_bits[k])`` ([-127, 127] at 8 bits):
        input -> hidden 1, ..., last hidden -> output; at most
        :data:`MAX_PROJECTIONS` of them, each with at most :data:`MAX_PROJECTION_WEIGHTS`
        entries and populations of at most :data:`MAX_POPULATION_NEURONS` neurons
    :param thresholds: firing threshold per population, float32 arrays of shape ``(n,)``,
        finite and positive (the output uses a high threshold such as 5000 to integrate)
    :param alpha_decay: membrane decay per population, float32 ``(n,)`` in [0, 1]
    :param i_offset: constant input current per population, float32 ``(n,)``, finite
    :param obs_bound: encoder bounds, float32 ``(d,)``, finite and positive; the first
        projection must have ``n_pre == 2 * d``
    :param reset: ``"subtract"`` (reset by subtraction) or ``"zero"`` (reset to ``v_reset``)
    :param v_reset: voltage after a spike when ``reset == "zero"``
    :param ticks: simulation ticks per inference, 1 .. :data:`MAX_TICKS`
    :param delay: ticks from a spike to its arrival at the next population, 0 or 1
    :param encoding: input spike generation: ``"deterministic"`` (accumulator rate code),
        ``"poisson"`` or ``"hybrid"`` (NeuEdge's hybrid coding: the deterministic code with
        each input neuron's threshold lowered with its input, ``1 - encoding_alpha * r``)
    :param seed: seed of the Poisson encoder (>= 0)
    :param lambdas: the quantization scale of each projection (Q-values are the output
        voltages divided by ``lambdas[-1]``); all ones when not given
    :param centered_readout: True when the readout computes ``Q - mean over actions of Q``
        (see :func:`spiking_dqn.quantization.center_readout`): same greedy action, and
        voltages small enough for a fine output lambda under the 5000 threshold
    :param encoding_alpha: hybrid coding's threshold slope, in [0, 1); 0 unless
        ``encoding == "hybrid"`` (files without it load as 0)
    :param weight_bits: bits per weight of each projection, 2..8 (see :func:`weight_limit`):
        one integer for every projection or a list with one per projection; ``None``
        (default) is 8 for every projection. Normalised to a list, one per projection.
    :param state_levels: membrane state levels (SQUAT): ``None`` (float32 membranes), or one
        entry per population (hidden layers, then output), each ``None`` or ``2^n`` sorted
        float32 levels; the membrane kept after each tick's reset is the nearest level
        (ties to the lower). See :mod:`spiking_dqn.hardware.program_fields`.
    :param tick_gain: per-tick synaptic gains (TaWQ): ``None``, or one entry per projection,
        each ``None`` or a float32 ``(ticks,)`` array multiplying that projection's input
        arriving at each tick
    """

    weights: list[np.ndarray]
    thresholds: list[np.ndarray]
    alpha_decay: list[np.ndarray]
    i_offset: list[np.ndarray]
    obs_bound: np.ndarray
    reset: Literal["subtract", "zero"] = "subtract"
    v_reset: float = 0.0
    ticks: int = 10
    delay: int = 1
    encoding: EncodingMode = "deterministic"
    seed: int = 0
    lambdas: list[float] = field(default_factory=list)
    centered_readout: bool = False
    encoding_alpha: float = 0.0
    weight_bits: list[int] | int | None = None
    state_levels: list[np.ndarray | None] | None = None
    tick_gain: list[np.ndarray | None] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the dataclass is frozen; normalise fields once here
        if not isinstance(self.weights, (list, tuple)) or len(self.weights) == 0:
            raise ValueError("weights must be a non-empty list of int8 arrays, one per projection")
        if len(self.weights) > MAX_PROJECTIONS:
            raise ValueError(
                f"a program has at most MAX_PROJECTIONS = {MAX_PROJECTIONS} projections, got {len(self.weights)}"
            )
        weights = []
        for k, w in enumerate(self.weights):
            if not isinstance(w, np.ndarray):
                raise ValueError(f"weights[{k}] must be a numpy int8 array, got {type(w).__name__}")
            if w.dtype != np.int8:
                raise ValueError(
                    f"weights[{k}] must have dtype int8, got {w.dtype}; quantize with "
                    "spiking_dqn.quantization.quantize_weights (values are never cast silently)"
                )
            if w.ndim != 2 or 0 in w.shape:
                raise ValueError(f"weights[{k}] must be a non-empty 2-D (n_post, n_pre) matrix, got shape {w.shape}")
            _check_projection_size(w.shape, f"weights[{k}]")
            if w.size and int(w.min()) < -INT8_WEIGHT_LIMIT:
                raise ValueError(
                    f"weights[{k}] contains -128; chip weights must be in [-{INT8_WEIGHT_LIMIT}, {INT8_WEIGHT_LIMIT}]"
                )
            weights.append(_readonly(w.copy()))
        for k in range(1, len(weights)):
            if weights[k].shape[1] != weights[k - 1].shape[0]:
                raise ValueError(
                    f"layer sizes do not chain: weights[{k - 1}] has {weights[k - 1].shape[0]} post neurons "
                    f"but weights[{k}] expects {weights[k].shape[1]} pre neurons"
                )
        set_(self, "weights", weights)
        bits = check_weight_bits(DEFAULT_WEIGHT_BITS if self.weight_bits is None else self.weight_bits, len(weights))
        for k, (w, b) in enumerate(zip(weights, bits)):
            limit = weight_limit(b)
            peak = int(np.abs(w.astype(np.int16)).max())
            if peak > limit:
                raise ValueError(
                    f"weights[{k}] has a weight of magnitude {peak}, outside [-{limit}, {limit}], the range of "
                    f"weight_bits[{k}] = {b} (L = 2^(bits-1) - 1); quantize on a grid of that width"
                )
        set_(self, "weight_bits", bits)
        sizes = [w.shape[0] for w in weights]
        for name in ("thresholds", "alpha_decay", "i_offset"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or len(values) != len(sizes):
                got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
                raise ValueError(f"{name} must be a list with one array per population ({len(sizes)}), got {got}")
            set_(self, name, [_population_array(v, n, name, k) for k, (v, n) in enumerate(zip(values, sizes))])
        for k, thr in enumerate(self.thresholds):
            if np.any(thr <= 0):
                raise ValueError(f"thresholds[{k}] must be positive, got min {float(thr.min())}")
        for k, alpha in enumerate(self.alpha_decay):
            if np.any(alpha < 0) or np.any(alpha > 1):
                raise ValueError(
                    f"alpha_decay[{k}] must be in [0, 1], got range [{float(alpha.min())}, {float(alpha.max())}]"
                )

        bound = np.array(self.obs_bound, dtype=np.float32)
        if bound.ndim != 1 or bound.size == 0:
            raise ValueError(f"obs_bound must be a non-empty 1-D array, got shape {bound.shape}")
        if not np.all(np.isfinite(bound)) or np.any(bound <= 0):
            raise ValueError(f"obs_bound must be finite and positive in every dimension, got {bound}")
        if weights[0].shape[1] != 2 * bound.size:
            raise ValueError(
                f"the first projection has {weights[0].shape[1]} pre neurons but an observation of dimension "
                f"{bound.size} drives {2 * bound.size} input neurons (signed two-neuron code)"
            )
        set_(self, "obs_bound", _readonly(bound))

        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")
        v_reset = float(self.v_reset)
        if not np.isfinite(v_reset):
            raise ValueError(f"v_reset must be finite, got {self.v_reset}")
        set_(self, "v_reset", v_reset)
        for name in ("ticks", "delay", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            set_(self, name, int(value))
        if not 1 <= self.ticks <= MAX_TICKS:
            raise ValueError(f"ticks must be in 1 .. MAX_TICKS = {MAX_TICKS}, got {self.ticks}")
        if self.delay not in (0, 1):
            raise ValueError(f"delay must be 0 or 1, got {self.delay}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not isinstance(self.centered_readout, (bool, np.bool_)):
            raise ValueError(f"centered_readout must be a bool, got {self.centered_readout!r}")
        set_(self, "centered_readout", bool(self.centered_readout))
        if self.encoding not in ENCODING_MODES:
            raise ValueError(f"encoding must be one of {ENCODING_MODES}, got {self.encoding!r}")
        alpha = self.encoding_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise ValueError(f"encoding_alpha must be a number in [0, 1), got {alpha!r}")
        if not (np.isfinite(alpha) and 0.0 <= alpha < 1.0):
            raise ValueError(f"encoding_alpha (hybrid coding) must be in [0, 1), got {alpha!r}")
        if alpha != 0.0 and self.encoding != "hybrid":
            raise ValueError(f"encoding_alpha is hybrid coding's; it must be 0 with encoding={self.encoding!r}")
        set_(self, "encoding_alpha", float(alpha))

        lambdas = list(self.lambdas) if self.lambdas is not None else []
        if len(lambdas) == 0:
            lambdas = [1.0] * len(weights)
        if len(lambdas) != len(weights):
            raise ValueError(f"lambdas must have one value per projection ({len(weights)}), got {len(lambdas)}")
        try:
            lambdas = [float(lam) for lam in lambdas]
        except (TypeError, ValueError):
            raise ValueError(f"lambdas must be numbers, got {self.lambdas!r}") from None
        if not all(np.isfinite(lam) and lam > 0 for lam in lambdas):
            raise ValueError(f"lambdas must be finite and positive, got {lambdas}")
        set_(self, "lambdas", lambdas)
        set_(self, "state_levels", check_state_levels(self.state_levels, len(weights)))
        set_(self, "tick_gain", check_tick_gain(self.tick_gain, len(weights), self.ticks))

    # ------------------------------------------------------------------ properties

    @property
    def obs_dim(self) -> int:
        """Observation dimension ``d``."""
        return int(self.obs_bound.size)

    @property
    def n_actions(self) -> int:
        """Number of output neurons (actions)."""
        return int(self.weights[-1].shape[0])

    @property
    def weight_memory(self) -> list[int]:
        """Bytes of each projection's weights at its width (:func:`weight_memory_bytes`)."""
        return [weight_memory_bytes(w.size, b) for w, b in zip(self.weights, self.weight_bits)]

    @property
    def layer_sizes(self) -> list[int]:
        """Population sizes: input neurons (``2d``), each hidden layer, output."""
        return [int(self.weights[0].shape[1])] + [int(w.shape[0]) for w in self.weights]

    # ------------------------------------------------------------------ copies, equality

    def with_thresholds(self, thresholds: Sequence[ArrayLike]) -> ChipProgram:
        """A copy with new thresholds (for threshold search).

        :param thresholds: one entry per population (hidden layers, then output), each a
            scalar (same threshold for the whole population) or an array of shape ``(n,)``
        :return: the new program, validated
        """
        sizes = [w.shape[0] for w in self.weights]
        if len(thresholds) != len(sizes):
            raise ValueError(f"expected one threshold entry per population ({len(sizes)}), got {len(thresholds)}")
        new = [np.full(n, t, dtype=np.float32) if np.ndim(t) == 0 else t for t, n in zip(thresholds, sizes)]
        return dataclasses.replace(self, thresholds=new)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChipProgram):
            return NotImplemented
        arrays = ("weights", "thresholds", "alpha_decay", "i_offset")
        scalars = (
            "reset", "v_reset", "ticks", "delay", "encoding", "seed", "lambdas", "centered_readout", "encoding_alpha",
            "weight_bits",
        )
        return (
            all(getattr(self, s) == getattr(other, s) for s in scalars)
            and optional_arrays_equal(self.state_levels, other.state_levels)
            and optional_arrays_equal(self.tick_gain, other.tick_gain)
            and np.array_equal(self.obs_bound, other.obs_bound)
            and all(
                len(getattr(self, a)) == len(getattr(other, a))
                and all(
                    x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(getattr(self, a), getattr(other, a))
                )
                for a in arrays
            )
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays; compared by value

    def __repr__(self) -> str:
        return (
            f"ChipProgram(layer_sizes={self.layer_sizes}, ticks={self.ticks}, delay={self.delay}, "
            f"reset={self.reset!r}, encoding={self.encoding!r}, lambdas={self.lambdas}, "
            f"weight_bits={self.weight_bits}"
            + ("" if self.state_levels is None else
               f", state_bits={[None if lv is None else state_bits(lv) for lv in self.state_levels]}")
            + ("" if self.tick_gain is None else ", tick_gain=True")
            + ")"
        )

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write the program to one ``.npz`` file (no pickle), at exactly ``path``.

        :param path: file to write
        :return: the path written
        """
        path = Path(path)
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "n_projections": len(self.weights),
            "reset": self.reset,
            "v_reset": self.v_reset,
            "ticks": self.ticks,
            "delay": self.delay,
            "encoding": self.encoding,
            "seed": self.seed,
            "lambdas": self.lambdas,
            "centered_readout": self.centered_readout,
            "encoding_alpha": self.encoding_alpha,
            "weight_bits": self.weight_bits,
            # Which populations have state levels and which projections tick gains (arrays below).
            "state_levels": None if self.state_levels is None else [lv is not None for lv in self.state_levels],
            "tick_gain": None if self.tick_gain is None else [g is not None for g in self.tick_gain],
        }
        arrays: dict[str, np.ndarray] = {"metadata": np.array(json.dumps(metadata)), "obs_bound": self.obs_bound}
        for name in ("state_levels", "tick_gain"):
            for k, entry in enumerate(getattr(self, name) or []):
                if entry is not None:
                    arrays[f"{name}_{k}"] = entry
        for k in range(len(self.weights)):
            arrays[f"weights_{k}"] = self.weights[k]
            arrays[f"thresholds_{k}"] = self.thresholds[k]
            arrays[f"alpha_decay_{k}"] = self.alpha_decay[k]
            arrays[f"i_offset_{k}"] = self.i_offset[k]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChipProgram:
        """Read a program written by :meth:`save`, and validate it.

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
                return cls._from_archive(data, path)
            except ChipProgramError:
                raise
            except _ARCHIVE_ERRORS as exc:
                raise ChipProgramError(f"{path}: truncated or damaged chip program archive ({exc})") from None

    @classmethod
    def _from_archive(cls, data: Any, path: Path) -> ChipProgram:
        if "metadata" not in data.files:
            raise ChipProgramError(f"{path}: not a spiking-dqn chip program (no 'metadata' entry; foreign .npz?)")
        try:
            meta_array = data["metadata"]
            metadata = json.loads(str(meta_array[()]))
        except (ValueError, TypeError, IndexError) as exc:
            raise ChipProgramError(f"{path}: unreadable chip program metadata ({exc})") from None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
            tag = metadata.get("format") if isinstance(metadata, dict) else None
            raise ChipProgramError(
                f"{path}: not a spiking-dqn chip program (format tag {tag!r}, expected {FORMAT_NAME!r})"
            )
        version = metadata.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ChipProgramError(f"{path}: invalid chip program format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ChipProgramError(
                f"{path}: chip program format version {version} was written by a newer spiking-dqn "
                f"(this one reads up to version {FORMAT_VERSION}); upgrade spiking-dqn to load it"
            )
        required = ("n_projections", "reset", "v_reset", "ticks", "delay", "encoding", "seed", "lambdas")
        if version >= 2:
            required += ("weight_bits",)  # version 1 had none: its weights are int8, 8 bits
        missing_keys = [k for k in required if k not in metadata]
        if missing_keys:
            raise ChipProgramError(f"{path}: chip program metadata lacks {missing_keys}")
        n = metadata["n_projections"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROJECTIONS:
            raise ChipProgramError(
                f"{path}: invalid n_projections {n!r} in chip program metadata (1 .. MAX_PROJECTIONS = "
                f"{MAX_PROJECTIONS})"
            )
        ticks = metadata["ticks"]
        if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks > MAX_TICKS:
            raise ChipProgramError(
                f"{path}: chip program metadata says ticks = {ticks}, over the limit MAX_TICKS = {MAX_TICKS}"
            )
        names = ["obs_bound"] + [
            f"{a}_{k}" for k in range(n) for a in ("weights", "thresholds", "alpha_decay", "i_offset")
        ]
        missing = [name for name in names if name not in data.files]
        if missing:
            raise ChipProgramError(f"{path}: chip program archive is missing arrays {missing}")
        for name in names:  # sizes from the headers, before any array is read
            shape = _entry_shape(data, name)
            try:
                if name.startswith("weights_"):
                    if len(shape) == 2:
                        _check_projection_size(shape, name)
                elif int(np.prod(shape, dtype=np.int64)) > MAX_POPULATION_NEURONS:
                    raise ValueError(
                        f"{name} has shape {shape}: populations have at most MAX_POPULATION_NEURONS = "
                        f"{MAX_POPULATION_NEURONS} neurons"
                    )
            except ValueError as exc:
                raise ChipProgramError(f"{path}: invalid chip program: {exc}") from None
        optional: dict[str, list[str | None] | None] = {}
        for field_name in ("state_levels", "tick_gain"):
            present = metadata.get(field_name)
            if present is None:
                optional[field_name] = None
                continue
            if not isinstance(present, list) or len(present) != n or not all(isinstance(x, bool) for x in present):
                raise ChipProgramError(f"{path}: invalid {field_name} entry {present!r} in chip program metadata")
            optional[field_name] = [f"{field_name}_{k}" if x else None for k, x in enumerate(present)]
            absent = [name for name in optional[field_name] if name is not None and name not in data.files]
            if absent:
                raise ChipProgramError(f"{path}: chip program archive is missing arrays {absent}")
            for name in optional[field_name]:
                if name is not None and int(np.prod(_entry_shape(data, name), dtype=np.int64)) > max(2**MAX_STATE_BITS, MAX_TICKS):
                    raise ChipProgramError(f"{path}: invalid chip program: {name} is too large")
            names += [name for name in optional[field_name] if name is not None]
        try:
            arrays = {name: data[name] for name in names}
        except _ARCHIVE_ERRORS as exc:
            raise ChipProgramError(f"{path}: truncated or damaged chip program archive ({exc})") from None
        try:
            return cls(
                weights=[arrays[f"weights_{k}"] for k in range(n)],
                thresholds=[arrays[f"thresholds_{k}"] for k in range(n)],
                alpha_decay=[arrays[f"alpha_decay_{k}"] for k in range(n)],
                i_offset=[arrays[f"i_offset_{k}"] for k in range(n)],
                obs_bound=arrays["obs_bound"],
                reset=metadata["reset"],
                v_reset=metadata["v_reset"],
                ticks=metadata["ticks"],
                delay=metadata["delay"],
                encoding=metadata["encoding"],
                seed=metadata["seed"],
                lambdas=metadata["lambdas"],
                centered_readout=metadata.get("centered_readout", False),
                encoding_alpha=metadata.get("encoding_alpha", 0.0),
                weight_bits=metadata.get("weight_bits", DEFAULT_WEIGHT_BITS),
                **{
                    field_name: None if entries is None else [None if e is None else arrays[e] for e in entries]
                    for field_name, entries in optional.items()
                },
            )
        except (ValueError, TypeError) as exc:
            raise ChipProgramError(f"{path}: invalid chip program: {exc}") from None
