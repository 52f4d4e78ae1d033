"""Weight bit widths: the integer range a projection of ``k`` bits holds, and the memory it takes.

Projection weights are integers in ``[-L, L]`` with ``L = 2^(k-1) - 1`` for a width ``k`` in
:data:`MIN_WEIGHT_BITS` .. :data:`MAX_WEIGHT_BITS` (8: int8's +-127; 2: ternary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spiking_dqn.semantics.checks import check_int

INT8_WEIGHT_LIMIT = 127
#: Weight bit widths a program may declare per projection (2: ternary, 8: int8).
MIN_WEIGHT_BITS = 2
MAX_WEIGHT_BITS = 8
#: The width of a projection that declares none (and of every projection of a version-1 file).
DEFAULT_WEIGHT_BITS = 8


def weight_limit(bits: int) -> int:
    """Largest weight magnitude at ``bits`` bits, symmetric: ``L = 2^(bits-1) - 1``.

    8 bits: 127; 5 bits: 15 (a 4-bit magnitude and a sign); 4 bits: 7; 2 bits: 1 (ternary).

    :param bits: the width, :data:`MIN_WEIGHT_BITS` .. :data:`MAX_WEIGHT_BITS`
    :raises ValueError: a width outside that range, or not an integer
    """
    return 2 ** (_check_bits(bits, "weight_bits") - 1) - 1


def weight_memory_bytes(n_weights: int, bits: int) -> int:
    """Bytes of ``n_weights`` weights packed at ``bits`` bits each: ``ceil(n_weights * bits / 8)``.

    Every weight of the dense ``(n_post, n_pre)`` matrix counts (zeros included), packed
    with no padding between weights and none per row; int8 storage (what the file holds)
    is the 8-bit figure. Indices, delays and the neuron parameters are not counted.

    :param n_weights: number of weights
    :param bits: bits per weight
    """
    return -(-int(n_weights) * int(bits) // 8)


def _check_bits(value: Any, where: str) -> int:
    bits = check_int(value, where, what=f"an integer in {MIN_WEIGHT_BITS}..{MAX_WEIGHT_BITS} (bits per weight)")
    if not MIN_WEIGHT_BITS <= bits <= MAX_WEIGHT_BITS:
        raise ValueError(
            f"{where} must be in {MIN_WEIGHT_BITS}..{MAX_WEIGHT_BITS} bits (2: ternary, 8: int8), got {bits}"
        )
    return bits


def check_weight_bits(value: Any, n_projections: int | None = None) -> list[int]:
    """One weight width per projection from an int (every projection) or a sequence (one each).

    :param value: an integer in :data:`MIN_WEIGHT_BITS` .. :data:`MAX_WEIGHT_BITS`, or a
        sequence of them, one per projection
    :param n_projections: the number of projections (``None``: an integer gives a
        one-element list and a sequence is only checked value by value)
    :return: the widths, one per projection
    :raises ValueError: a width outside 2..8, a non-integer, a sequence of the wrong length
    """
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        values = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
        if not values:
            raise ValueError("weight_bits must be an integer or a non-empty list with one per projection")
        if n_projections is not None and len(values) != n_projections:
            raise ValueError(
                f"weight_bits has {len(values)} values for {n_projections} projections; give one integer for "
                "every projection or one per projection"
            )
        return [_check_bits(v, f"weight_bits[{k}]") for k, v in enumerate(values)]
    return [_check_bits(value, "weight_bits")] * (1 if n_projections is None else n_projections)
