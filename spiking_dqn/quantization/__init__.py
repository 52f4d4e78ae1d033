"""THE weight grid of a deployed spiking Q-network, and building its chip program.

Every projection ``k`` is scaled by a factor ``lambda_k`` and rounded to the chip's
integers, ``w_q = clip(rint(lambda_k * w), -L_k, L_k)`` with ``L_k = 2^(b_k - 1) - 1`` for
the projection's weight width ``b_k`` in 2..8 (``Grid.weight_bits``; 8 by default, ``L =
WEIGHT_LIMIT = 127``; 5 bits: 15; 4 bits: 7; 2 bits: 1, ternary {-1, 0, 1}):

* the grid itself lives below this package: the formula and the readout centring in numpy
  in :mod:`spiking_dqn.semantics.weights`, and :class:`~spiking_dqn.grid.Grid`, a
  network's lambdas applied to its weights (chip integers, fake quantization for QAT,
  distance to the grid, pull onto it), in :mod:`spiking_dqn.grid`, which the float
  network imports;
* :mod:`~spiking_dqn.quantization.lambdas`: lambda specifications (a number, one per
  projection, ``"auto"``, ``"mse"``, or ``None`` for the network's own grid) and weight widths
  resolved into a grid (``"auto"`` maps a percentile of ``|w|`` to ``L_k``, ``"mse"`` takes
  the lambda of least reconstruction error, the better rule at low widths);
* :mod:`~spiking_dqn.quantization.report`: per projection its width, lambda, clipped and
  zeroed weights and weight memory in bytes at its width;
* :mod:`~spiking_dqn.quantization.build`: the chip program of a network on its grid;
* :mod:`~spiking_dqn.quantization.digest`: the digest of the float model a program records,
  and the check that a program was built from a given model;
* :mod:`~spiking_dqn.quantization.snap`: snapping a network's weights onto its grid (after QAT);
* :mod:`~spiking_dqn.quantization.levels`: membrane state levels (SQUAT), uniform or threshold-centred.

Since the membrane of the population a projection feeds lives in units of ``lambda_k``,
that population's ``i_offset`` (the bias) and threshold are multiplied by the same
``lambda_k``. Spikes are binary and carry no scale, so neighbouring projections may use
different lambdas. The output voltages are in units of the last lambda:
``Q = voltage / lambda_out``. Two things go wrong with a bad lambda, and both are reported
per layer: weights beyond ``L / lambda`` clip (too large a lambda), and small weights round
to zero ("quantization collapse", too small a lambda).
"""

from __future__ import annotations

from spiking_dqn.quantization.build import fake_quantize_network, quantize_network
from spiking_dqn.quantization.digest import check_program_model, model_digest
from spiking_dqn.quantization.lambdas import (
    AUTO_OUTPUT_HEADROOM,
    AUTO_OUTPUT_SAMPLES,
    AUTO_PERCENTILE,
    OUTPUT_THRESHOLD,
    LambdaSpec,
    WeightBitsSpec,
    auto_lambda,
    center_readout,
    float_weights,
    readout_peak,
    resolve_grid,
    resolve_lambdas,
)
from spiking_dqn.quantization.levels import state_levels_for, threshold_centered_levels, uniform_levels
from spiking_dqn.quantization.report import CLIP_WARN_FRACTION, LayerReport, QuantizationReport, quantization_report
from spiking_dqn.quantization.snap import fake_quantized_copy, snap_model_to_grid, snap_to_grid

__all__ = [
    "AUTO_OUTPUT_HEADROOM",
    "AUTO_OUTPUT_SAMPLES",
    "AUTO_PERCENTILE",
    "CLIP_WARN_FRACTION",
    "OUTPUT_THRESHOLD",
    "LambdaSpec",
    "LayerReport",
    "QuantizationReport",
    "WeightBitsSpec",
    "auto_lambda",
    "center_readout",
    "check_program_model",
    "fake_quantize_network",
    "fake_quantized_copy",
    "float_weights",
    "model_digest",
    "quantization_report",
    "quantize_network",
    "readout_peak",
    "resolve_grid",
    "resolve_lambdas",
    "snap_model_to_grid",
    "snap_to_grid",
    "state_levels_for",
    "threshold_centered_levels",
    "uniform_levels",
]
