"""The chip emulator's compiled pass (numba): a chip program on a batch of input trains in one call.

The emulator (:mod:`spiking_dqn.hardware.emulator`) runs through the loop nest of the float
network's layers, :func:`~spiking_dqn.semantics.network_kernels.layer_ticks`, with the
chip's options: integer weights (as float32: their sums of 0/1 spikes are exact), one decay,
``i_offset`` and threshold per neuron, the chip's order of the membrane sum, its reset
(subtract, or to ``v_reset``), state levels and per-tick gains per population, and the
output population as one more LIF population (its high threshold makes it integrate; a
crossing is a saturation the caller reports). The parameters of a program travel as a few
flat arrays (:class:`ChipArrays`), so a call costs one dispatch of a handful of arguments.

Same semantics, and the same float32 operations in the same order, as the tick-by-tick
definition in ``DESIGN.md`` ("Chip semantics"); tests check the emulator against it.

numba's disk cache follows this file only: after an edit of the functions inlined here
(``layer_ticks`` and what it calls), touch this file (or clear its ``__pycache__``) so that
the emulator compiles the new code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from spiking_dqn.semantics.network_kernels import layer_ticks

#: Populations narrower than this sum their synaptic currents densely
#: (:func:`~spiking_dqn.semantics.network_kernels.dense_integer_currents`), wider ones
#: event-driven: a spike's weight row is too short to pay for its loop below it.
DENSE_BELOW = 16


class ChipArrays(NamedTuple):
    """A chip program's parameters as :func:`chip_forward` takes them (made once per program).

    :param sizes: population sizes, input first, int64 ``(P,)``
    :param weights: every projection's weights as float32, one after another, C order:
        transposed, ``(n_pre, n_post)``, for a population of :data:`DENSE_BELOW` neurons or
        more, as they are, ``(n_post, n_pre)``, for a narrower one
    :param neurons: decay, ``i_offset`` and threshold of every non-input neuron, population
        after population, float32 ``(3, sum(sizes[1:]))``
    :param gains: each projection's gain per arrival tick, float32 ``(P - 1, T)`` (ones: none)
    :param levels: every population's state levels one after another, float32
    :param level_bounds: population ``p``'s levels are ``levels[level_bounds[p]:level_bounds[p + 1]]``
        (empty: float32 state), int64 ``(P,)``
    :param fan_out: nonzero outgoing weights of every neuron that sends a projection, input
        first, float64 ``(sum(sizes[:-1]),)`` (exact integers)
    """

    sizes: np.ndarray
    weights: np.ndarray
    neurons: np.ndarray
    gains: np.ndarray
    levels: np.ndarray
    level_bounds: np.ndarray
    fan_out: np.ndarray

    @classmethod
    def of(
        cls,
        weights: Sequence[np.ndarray],
        alpha_decay: Sequence[np.ndarray],
        i_offset: Sequence[np.ndarray],
        thresholds: Sequence[np.ndarray],
        state_levels: Sequence[np.ndarray | None] | None,
        tick_gain: Sequence[np.ndarray | None] | None,
        ticks: int,
    ) -> ChipArrays:
        """The arrays of a chip program's fields (``ChipProgram``'s of the same names).

        :param weights: integer weight matrices ``(n_post, n_pre)``, one per projection
        :param alpha_decay: decay per neuron of each non-input population (and ``i_offset``,
            ``thresholds`` alike)
        :param state_levels: levels per non-input population (``None`` entries, or ``None``: float32 state)
        :param tick_gain: gains ``(ticks,)`` per projection (``None`` entries, or ``None``: none)
        :param ticks: ticks per inference
        """
        n = len(weights)
        levels = [np.empty(0, np.float32) if lv is None else lv for lv in state_levels or [None] * n]
        gains = np.ones((n, ticks), dtype=np.float32)
        for k, gain in enumerate(tick_gain or []):
            if gain is not None:
                gains[k] = gain
        laid_out = [w.T if w.shape[0] >= DENSE_BELOW else w for w in weights]
        return cls(
            sizes=np.array([weights[0].shape[1]] + [w.shape[0] for w in weights], dtype=np.int64),
            weights=np.concatenate([np.ascontiguousarray(w, dtype=np.float32).reshape(-1) for w in laid_out]),
            neurons=np.array([np.concatenate(params) for params in (alpha_decay, i_offset, thresholds)], np.float32),
            gains=gains,
            levels=np.concatenate(levels).astype(np.float32),
            level_bounds=np.cumsum([0] + [lv.size for lv in levels], dtype=np.int64),
            fan_out=np.concatenate([np.count_nonzero(w, axis=0) for w in weights]).astype(np.float64),
        )


class ChipRun(NamedTuple):
    """What :func:`chip_forward` returns for a batch of ``B`` observations (``s``: the sizes' cumulative sums).

    :param voltages: output membranes after the last tick, float32 ``(B, A)``
    :param counts: spikes per neuron over the ticks, int64: population ``p`` (input first)
        is the block ``counts[B s_p : B s_(p+1)]`` of shape ``(B, n_p)``
    :param events: synaptic deliveries per observation, int64 ``(B,)``
    :param trains: every population's spikes, bool, population ``p`` the block
        ``trains[T B s_p : T B s_(p+1)]`` of shape ``(T, B, n_p)``; empty unless recorded
    :param trace: output membranes after every tick, float32 ``(T, B, A)``
    :param ranges: ``[min, max]`` of each non-input population's kept membrane over all
        ticks and observations, float32 ``(P - 1, 2)`` (``[inf, -inf]`` when not asked for)
    """

    voltages: np.ndarray
    counts: np.ndarray
    events: np.ndarray
    trains: np.ndarray
    trace: np.ndarray
    ranges: np.ndarray


def scratch_size(sizes: np.ndarray, ticks: int, batch: int, chunk: int, record_ranges: bool) -> int:
    """Entries of :func:`chip_forward`'s ``scratch``: a chunk's trains, arrived counts, output and kept membranes."""
    total, widest = int(sizes.sum()), int(sizes[1:].max())
    width = min(chunk, batch)
    return width * (ticks * total + total + ticks * int(sizes[-1]) + (ticks * widest if record_ranges else 0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def chip_outputs(sizes: np.ndarray, ticks: int, batch: int, record_trains: bool) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """The arrays of a :class:`ChipRun` of ``batch`` observations, for :func:`chip_range` to fill (``ranges`` at ``[inf, -inf]``)."""
    n_pops, total, n_actions = sizes.shape[0], sizes.sum(), sizes[sizes.shape[0] - 1]
    ranges = np.empty((n_pops - 1, 2), dtype=np.float32)
    ranges[:, 0], ranges[:, 1] = np.inf, -np.inf
    return (
        np.empty((batch, n_actions), dtype=np.float32),
        np.empty(batch * total, dtype=np.int64),
        np.zeros(batch, dtype=np.int64),
        np.empty(ticks * batch * total if record_trains else 0, dtype=np.bool_),
        np.empty((ticks, batch, n_actions), dtype=np.float32),
        ranges,
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def chip_forward(
    inputs: np.ndarray,
    sizes: np.ndarray,
    weights: np.ndarray,
    neurons: np.ndarray,
    gains: np.ndarray,
    levels: np.ndarray,
    level_bounds: np.ndarray,
    fan_out: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    delay: int,
    chunk: int,
    record_trains: bool,
    record_ranges: bool,
    scratch: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A chip program on a batch of input trains, ``chunk`` observations at a time (see :class:`ChipRun`).

    :func:`chip_outputs`, then :func:`chip_range` over the whole batch, in one call.

    :param inputs: input spike trains, float32 0/1 ``(T, B, sizes[0])``
    :param sizes: (and ``weights`` to ``fan_out``) the program's :class:`ChipArrays`, field by field
    :param subtract: reset by subtraction (else to ``v_reset``)
    :param v_reset: membrane after a spike when not subtracting
    :param delay: ticks from a spike to its arrival at the next population
    :param chunk: observations simulated together (at least 1)
    :param record_trains: return every population's trains
    :param record_ranges: fill ``ranges`` (the kept membranes of a chunk's population are
        then held for all ticks)
    :param scratch: float32 working memory of at least :func:`scratch_size` entries (reused
        between calls by the caller: fresh pages cost more than the arithmetic)
    """
    ticks, batch = inputs.shape[0], inputs.shape[1]
    voltages, counts, events, trains, trace, ranges = chip_outputs(sizes, ticks, batch, record_trains)
    chip_range(
        inputs, sizes, weights, neurons, gains, levels, level_bounds, fan_out, subtract, v_reset, delay, chunk,
        record_trains, record_ranges, scratch, 0, batch, voltages, counts, events, trains, trace, ranges,
    )
    return voltages, counts, events, trains, trace, ranges


@numba.njit(cache=True, nogil=True, error_model="numpy")
def chip_range(
    inputs: np.ndarray,
    sizes: np.ndarray,
    weights: np.ndarray,
    neurons: np.ndarray,
    gains: np.ndarray,
    levels: np.ndarray,
    level_bounds: np.ndarray,
    fan_out: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    delay: int,
    chunk: int,
    record_trains: bool,
    record_ranges: bool,
    scratch: np.ndarray,
    lo: int,
    hi: int,
    voltages: np.ndarray,
    counts: np.ndarray,
    events: np.ndarray,
    trains: np.ndarray,
    trace: np.ndarray,
    ranges: np.ndarray,
) -> None:
    """Observations ``lo`` to ``hi`` of a batch, ``chunk`` at a time, into the batch's :func:`chip_outputs`.

    Each observation is computed alone (a chunk only groups them), so disjoint ranges may
    run on several threads at once (the kernels release the GIL), each with its own
    ``scratch`` and ``ranges``: they write disjoint parts of the other outputs. A chunk's
    trains of every population (``4 T chunk N`` bytes) are the working set. Arguments as
    :func:`chip_forward`'s, then the range and the outputs.
    """
    ticks, n_in = inputs.shape[0], inputs.shape[2]
    batch, total, n_actions = voltages.shape[0], sizes.sum(), sizes[sizes.shape[0] - 1]
    width = min(chunk, hi - lo)
    ends = np.cumsum(np.array([ticks * total, total, ticks * n_actions, ticks * sizes[1:].max() * record_ranges]))
    spikes, arrived = scratch[: width * ends[0]], scratch[width * ends[0] : width * ends[1]]
    out_trace, kept = scratch[width * ends[1] : width * ends[2]], scratch[width * ends[2] : width * ends[3]]
    for first in range(lo, hi, chunk):
        size = min(chunk, hi - first)
        part, part_arrived = spikes[: ticks * size * total], arrived[: size * total]
        part_arrived[: size * n_in] = 0.0
        for t in range(ticks):
            for b in range(size):
                for k in range(n_in):
                    part[(t * size + b) * n_in + k] = inputs[t, first + b, k]
            if t < ticks - delay:
                for i in range(size * n_in):
                    part_arrived[i] += part[t * size * n_in + i]
        trace_part = out_trace[: ticks * size * n_actions].reshape(ticks, size, n_actions)
        _populations(
            part, part_arrived, size, sizes, weights, neurons, gains, levels, level_bounds, subtract, v_reset,
            delay, kept, record_ranges, trace_part, ranges,
        )
        for t in range(ticks):
            for b in range(size):
                for a in range(n_actions):
                    trace[t, first + b, a] = trace_part[t, b, a]
        _activity(
            part, part_arrived, ticks, delay, size, sizes, fan_out, first, batch, counts, events, record_trains, trains
        )
    for b in range(lo, hi):
        for a in range(n_actions):
            voltages[b, a] = trace[ticks - 1, b, a]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _populations(
    spikes: np.ndarray,
    arrived: np.ndarray,
    batch: int,
    sizes: np.ndarray,
    weights: np.ndarray,
    neurons: np.ndarray,
    gains: np.ndarray,
    levels: np.ndarray,
    level_bounds: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    delay: int,
    kept: np.ndarray,
    record_ranges: bool,
    trace: np.ndarray,
    ranges: np.ndarray,
) -> None:
    """Every non-input population of one chunk: :func:`layer_ticks` with the chip's options.

    :param spikes: the chunk's trains, population blocks ``(T, batch, n_p)``, the input's filled
    :param arrived: output for the spikes emitted before tick ``T - delay`` per neuron, population
        blocks ``(batch, n_p)`` (the input's filled)
    :param trace: output for the output population's kept membranes ``(T, batch, A)``
    """
    ticks = trace.shape[0]
    no_pre = np.empty((0, 0, 0), dtype=np.float32)
    start, w_start, neuron = 0, 0, 0
    for p in range(sizes.shape[0] - 1):
        n_pre, n_post = sizes[p], sizes[p + 1]
        last = p == sizes.shape[0] - 2
        held = ticks if record_ranges else 0
        out_kept = trace if last else kept[: held * batch * n_post].reshape(held, batch, n_post)
        dense = n_post < DENSE_BELOW
        projection = weights[w_start : w_start + n_pre * n_post]
        layer_ticks(
            spikes[ticks * batch * start : ticks * batch * (start + n_pre)].reshape(ticks, batch, n_pre),
            projection.reshape(n_post, n_pre) if dense else projection.reshape(n_pre, n_post),
            dense,
            neurons[1, neuron : neuron + n_post],
            neurons[0, neuron : neuron + n_post],
            neurons[2, neuron : neuron + n_post],
            gains[p],
            subtract,
            v_reset,
            True,
            delay,
            levels[level_bounds[p] : level_bounds[p + 1]],
            no_pre,
            spikes[ticks * batch * (start + n_pre) : ticks * batch * (start + n_pre + n_post)].reshape(
                ticks, batch, n_post
            ),
            out_kept,
            True,
            arrived[batch * (start + n_pre) : batch * (start + n_pre + n_post)].reshape(batch, n_post),
        )
        if record_ranges:
            for value in out_kept.reshape(-1):
                ranges[p, 0] = min(ranges[p, 0], value)
                ranges[p, 1] = max(ranges[p, 1], value)
        start += n_pre
        w_start += n_pre * n_post
        neuron += n_post


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _activity(
    spikes: np.ndarray,
    arrived: np.ndarray,
    ticks: int,
    delay: int,
    size: int,
    sizes: np.ndarray,
    fan_out: np.ndarray,
    first: int,
    batch: int,
    counts: np.ndarray,
    events: np.ndarray,
    record_trains: bool,
    trains: np.ndarray,
) -> None:
    """Spike counts, synaptic events (and recorded trains) of one chunk, into the batch's (see :class:`ChipRun`).

    A spike emitted at tick ``t < T - delay`` arrives within the ticks and counts once per
    nonzero outgoing weight of its neuron (its fan-out); the spikes of the output
    population and of the last ``delay`` ticks are counted, but deliver nothing. The counts
    are float32 sums of ones (exact: at most ``MAX_TICKS`` < 2^24).

    :param spikes: the chunk's trains, population blocks ``(T, size, n_p)``
    :param arrived: the chunk's spikes emitted before tick ``T - delay``, blocks ``(size, n_p)``
    :param first: the chunk's first observation in the batch of ``batch``
    """
    n_pops, start = sizes.shape[0], 0
    for p in range(n_pops):
        n = sizes[p]
        train = spikes[ticks * size * start : ticks * size * (start + n)].reshape(ticks, size * n)
        sent = arrived[size * start : size * (start + n)]
        if p < n_pops - 1:  # the output population sends nothing
            _deliveries(sent, fan_out[start : start + n], events[first : first + size])
        out = counts[batch * start + first * n : batch * start + (first + size) * n]
        for i in range(size * n):
            out[i] = np.int32(sent[i])  # via int32, which vectorises (counts <= MAX_TICKS)
        for t in range(max(ticks - delay, 0), ticks):
            for i in range(size * n):
                out[i] += np.int32(train[t, i])
        if record_trains:
            recorded = trains[ticks * batch * start : ticks * batch * (start + n)].reshape(ticks, batch * n)
            for t in range(ticks):
                for i in range(size * n):
                    recorded[t, first * n + i] = train[t, i] != 0
        start += n


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _deliveries(sent: np.ndarray, fan_out: np.ndarray, events: np.ndarray) -> None:
    """Add ``sum_k sent[b, k] * fan_out[k]`` to ``events[b]`` for every observation ``b`` (``sent``: ``(B, n)`` flat).

    In float64, summed in any order (vectorised): every term and partial sum is an integer
    below ``MAX_TICKS * MAX_POPULATION_NEURONS**2`` < 2^53, hence exact.
    """
    n = fan_out.shape[0]
    for b in range(events.shape[0]):
        total = 0.0
        for k in range(n):
            total += np.float64(sent[b * n + k]) * fan_out[k]
        events[b] += np.int64(total)
