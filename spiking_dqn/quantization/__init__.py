"""THE weight grid of a deployed spiking Q-network, and building its chip program.

Every projection ``k`` is scaled by a factor ``lambda_k`` and rounded to the chip's
integers, ``w_q = clip(rint(lambda_k * w), -L_k, L_k)`` with ``L_k = 2^(b_k - 1) - 1`` for
the projection's weight width ``b_k`` in 2..8 (``Grid.weight_bits``; 8 by default, ``L =
WEIGHT_LIMIT = 127``; 5 bits: 15; 4 bits: 7; 2 bits: 1, ternary {-1, 0, 1}):

* :mod:`~spiking_dqn.quantization.grid`: :func:`quantize` (the one place that formula is
  written, numpy and torch), :func:`center` (the readout centred over the actions), and
  :class:`Grid`, a network's lambdas applied to its weights (chip integers, fake
  quantization for QAT, distance to the grid, pull onto it);
* :mod:`~spiking_dqn.quantization.lambdas`: lambda specifications (a number, one per
  projection, ``"auto"``, ``"mse"``, or ``None`` for the network's own grid) and weight widths
  resolved into a grid (``"auto"`` maps a percentile of ``|w|`` to ``L_k``, ``"mse"`` takes
  the lambda of least reconstruction error, the better rule at low widths);
* :mod:`~spiking_dqn.quantization.report`: per projection its width, lambda, clipped and
  zeroed weights and weight memory in bytes at its width;
* :mod:`~spiking_dqn.quantization.build`: the chip program of a network on its grid;
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

from spiking_dqn.lazy_imports import lazy_attributes

#: Public name -> submodule that defines it. Imported on first use (PEP 562), so that
#: :mod:`spiking_dqn.network` can hold a :class:`Grid` (``quantization.grid``) while the
#: program builder here imports the network.
_LAZY_IMPORTS: dict[str, str] = {
    **dict.fromkeys(["fake_quantize_network", "quantize_network"], "build"),
    **dict.fromkeys(["state_levels_for", "threshold_centered_levels", "uniform_levels"], "levels"),
    **dict.fromkeys(["WEIGHT_LIMIT", "Grid", "center", "quantize", "quantize_weights"], "grid"),
    **dict.fromkeys(
        [
            "AUTO_OUTPUT_HEADROOM",
            "AUTO_OUTPUT_SAMPLES",
            "AUTO_PERCENTILE",
            "OUTPUT_THRESHOLD",
            "LambdaSpec",
            "WeightBitsSpec",
            "auto_lambda",
            "center_readout",
            "float_weights",
            "readout_peak",
            "resolve_grid",
            "resolve_lambdas",
        ],
        "lambdas",
    ),
    **dict.fromkeys(["CLIP_WARN_FRACTION", "LayerReport", "QuantizationReport", "quantization_report"], "report"),
    **dict.fromkeys(["fake_quantized_copy", "snap_model_to_grid", "snap_to_grid"], "snap"),
}

__all__ = [
    "AUTO_OUTPUT_HEADROOM",
    "AUTO_OUTPUT_SAMPLES",
    "AUTO_PERCENTILE",
    "CLIP_WARN_FRACTION",
    "OUTPUT_THRESHOLD",
    "WEIGHT_LIMIT",
    "Grid",
    "LambdaSpec",
    "LayerReport",
    "QuantizationReport",
    "WeightBitsSpec",
    "auto_lambda",
    "center",
    "center_readout",
    "fake_quantize_network",
    "fake_quantized_copy",
    "float_weights",
    "quantization_report",
    "quantize",
    "quantize_network",
    "quantize_weights",
    "readout_peak",
    "resolve_grid",
    "resolve_lambdas",
    "snap_model_to_grid",
    "snap_to_grid",
    "state_levels_for",
    "threshold_centered_levels",
    "uniform_levels",
]


__getattr__, __dir__ = lazy_attributes(
    globals(), {name: f"{__name__}.{module}" for name, module in _LAZY_IMPORTS.items()}
)
