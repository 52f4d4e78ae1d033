"""The chip program: a frozen, plain-data description of a deployed spiking Q-network.

A :class:`ChipProgram` holds everything a backend needs to run the network and nothing
else: the integer weight matrices (stored as int8, each projection at its own bit width,
:attr:`ChipProgram.weight_bits`), the neuron parameters of every population, the number of
ticks, the synaptic delay and the input encoding. It is what
:func:`spiking_dqn.quantization.quantize_network` builds, what the emulator and the
SpiNNaker2 backend execute, and what is saved next to a trained agent.

Its fields are declared once, each with its kind (:mod:`spiking_dqn.hardware.program_fields`);
equality, ``repr``, :meth:`ChipProgram.digest` (the key of threshold-search studies), the
file (:mod:`spiking_dqn.hardware.program_file`: one ``.npz`` archive, no pickle) and the NIR
metadata (:mod:`spiking_dqn.export`) are derived from that one list.

Weight bit widths: projection ``k`` at ``weight_bits[k] = b`` holds integers in
``[-L, L]`` with ``L = weight_limit(b) = 2^(b-1) - 1`` (8 bits: +-127, 5: +-15, 4: +-7,
2: {-1, 0, 1}, ternary). The weights are stored as int8 whatever the width; the width is
what the target chip must hold, and what :func:`weight_memory_bytes` counts.

Limits: every program keeps to :data:`~spiking_dqn.hardware.program_fields.MAX_TICKS`,
``MAX_PROJECTIONS``, ``MAX_POPULATION_NEURONS`` and ``MAX_PROJECTION_WEIGHTS`` (checked on
construction), and :meth:`ChipProgram.load` checks the metadata and the shape of every
array, read from its header, before it reads any array, so a damaged or crafted file
cannot make it (or a backend) allocate without bound.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from spiking_dqn.semantics.checks import check_bool, check_int
from spiking_dqn.semantics.encoding import ENCODING_MODES, EncodingMode
from spiking_dqn.semantics.levels import state_bits
from spiking_dqn.semantics.lif import RESET_MODES
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, weight_memory_bytes
from spiking_dqn.hardware.program_fields import (
    ARRAY,
    MAX_TICKS,
    OPTIONAL_ARRAYS,
    PER_PROJECTION,
    SCALAR,
    check_encoding_alpha,
    check_lambdas,
    check_model_digest,
    check_obs_bound,
    check_population_arrays,
    check_state_levels,
    check_tick_gain,
    check_weights,
    check_weights_shape,
    check_widths,
    fields_digest,
    fields_equal,
    fields_repr,
    program_field,
)
from spiking_dqn.hardware.program_file import read_program, write_program

ArrayLike = np.ndarray | Sequence[float] | float


def _show_state_levels(name: str, levels: list[np.ndarray | None] | None) -> str | None:
    return None if levels is None else f"state_bits={[None if lv is None else state_bits(lv) for lv in levels]}"


def _show_model_digest(name: str, digest: str | None) -> str | None:
    return None if digest is None else f"model_digest={digest[:12]!r}"


def _show_tick_gain(name: str, gains: list[np.ndarray | None] | None) -> str | None:
    return None if gains is None else "tick_gain=True"



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
        projection must have ``n_pre == 2 * d``. ``None``: no observation encoder (a program
        imported from NIR with ``inputs="spikes"``): it runs input spike trains
        (``run_spikes``) only, and saves as NIR, not ``.npz``
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
    :param model_digest: the digest of the float model the program was built from
        (:func:`spiking_dqn.quantization.model_digest`, 64 hex digits), or ``None`` (not
        recorded: built by hand, or saved before programs recorded it); it changes nothing
        the backends run
    """

    weights: list[np.ndarray] = program_field(PER_PROJECTION, check_shape=check_weights_shape)
    thresholds: list[np.ndarray] = program_field(PER_PROJECTION)
    alpha_decay: list[np.ndarray] = program_field(PER_PROJECTION)
    i_offset: list[np.ndarray] = program_field(PER_PROJECTION)
    obs_bound: np.ndarray | None = program_field(ARRAY)
    reset: Literal["subtract", "zero"] = program_field(SCALAR, default="subtract")
    v_reset: float = program_field(SCALAR, default=0.0)
    ticks: int = program_field(SCALAR, default=10)
    delay: int = program_field(SCALAR, default=1)
    encoding: EncodingMode = program_field(SCALAR, default="deterministic")
    seed: int = program_field(SCALAR, default=0)
    lambdas: list[float] = program_field(SCALAR, default_factory=list)
    centered_readout: bool = program_field(SCALAR, default=False, absent=False, required_since=None)
    encoding_alpha: float = program_field(SCALAR, default=0.0, absent=0.0, required_since=None)
    # Required from format version 2; version-1 files held 8-bit weights only.
    weight_bits: list[int] | int | None = program_field(
        SCALAR, default=None, absent=DEFAULT_WEIGHT_BITS, required_since=2
    )
    state_levels: list[np.ndarray | None] | None = program_field(OPTIONAL_ARRAYS, default=None, show=_show_state_levels)
    tick_gain: list[np.ndarray | None] | None = program_field(OPTIONAL_ARRAYS, default=None, show=_show_tick_gain)
    # Which float model the program was built from; files written before it was recorded load with None.
    model_digest: str | None = program_field(
        SCALAR, default=None, absent=None, required_since=None, show=_show_model_digest
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the dataclass is frozen; normalise fields once here
        weights = check_weights(self.weights)
        set_(self, "weights", weights)
        set_(self, "weight_bits", check_widths(weights, self.weight_bits))
        sizes = [w.shape[0] for w in weights]
        for name in ("thresholds", "alpha_decay", "i_offset"):
            set_(self, name, check_population_arrays(name, getattr(self, name), sizes))
        set_(self, "obs_bound", check_obs_bound(self.obs_bound, weights[0].shape[1]))
        self._check_timing()
        self._check_coding()
        set_(self, "lambdas", check_lambdas(self.lambdas, len(weights)))
        set_(self, "state_levels", check_state_levels(self.state_levels, len(weights)))
        set_(self, "tick_gain", check_tick_gain(self.tick_gain, len(weights), self.ticks))
        set_(self, "model_digest", check_model_digest(self.model_digest))

    def _check_timing(self) -> None:
        """``reset``, ``v_reset``, ``ticks``, ``delay`` and ``seed``, checked and normalised."""
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be one of {RESET_MODES}, got {self.reset!r}")
        v_reset = float(self.v_reset)
        if not np.isfinite(v_reset):
            raise ValueError(f"v_reset must be finite, got {self.v_reset}")
        object.__setattr__(self, "v_reset", v_reset)
        for name in ("ticks", "delay", "seed"):
            object.__setattr__(self, name, check_int(getattr(self, name), name))
        if not 1 <= self.ticks <= MAX_TICKS:
            raise ValueError(f"ticks must be in 1 .. MAX_TICKS = {MAX_TICKS}, got {self.ticks}")
        if self.delay not in (0, 1):
            raise ValueError(f"delay must be 0 or 1, got {self.delay}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def _check_coding(self) -> None:
        """``centered_readout``, ``encoding`` and ``encoding_alpha``, checked and normalised."""
        object.__setattr__(self, "centered_readout", check_bool(self.centered_readout, "centered_readout"))
        if self.encoding not in ENCODING_MODES:
            raise ValueError(f"encoding must be one of {ENCODING_MODES}, got {self.encoding!r}")
        object.__setattr__(self, "encoding_alpha", check_encoding_alpha(self.encoding_alpha, self.encoding))

    # ------------------------------------------------------------------ properties

    @property
    def obs_dim(self) -> int:
        """Observation dimension ``d``.

        :raises ValueError: the program has no observation encoder (``obs_bound`` is None)
        """
        if self.obs_bound is None:
            raise ValueError(
                "this program has no observation encoder (obs_bound is None): it takes input spike trains, "
                "backend.run_spikes(program, spikes), not observations"
            )
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

    # ------------------------------------------------------------------ copies, equality, key

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
        return fields_equal(self, other)

    __hash__ = None  # type: ignore[assignment]  # holds arrays; compared by value

    def __repr__(self) -> str:
        return fields_repr(self, f"layer_sizes={self.layer_sizes}")

    def digest(self) -> str:
        """SHA-256 (hex) of every field: programs that differ in any field have different digests.

        It keys the studies of the threshold search (:mod:`spiking_dqn.search`), so a search
        never takes one program's evaluations for another's.
        """
        return fields_digest(self)

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> Path:
        """Write the program to one ``.npz`` file (no pickle), at exactly ``path``.

        :param path: file to write
        :return: the path written
        :raises ValueError: a program without an observation encoder (save it as NIR, ``write_nir``)
        """
        if self.obs_bound is None:
            raise ValueError("a program without an observation encoder (obs_bound None) is saved as NIR "
                             "(spiking_dqn.export.write_nir), not as a chip program file")
        return write_program(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChipProgram:
        """Read a program written by :meth:`save`, and validate it.

        :param path: the ``.npz`` file
        :raises FileNotFoundError: no such file
        :raises ChipProgramError: truncated or corrupt file, an ``.npz`` that is not a chip
            program, a file from a newer format version, missing arrays, invalid contents
        """
        return read_program(cls, path)
