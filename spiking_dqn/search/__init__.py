"""Choosing the hidden-layer thresholds of a quantized spiking Q-network on its backend.

* :func:`threshold_search`: the two-stage grid search (a global multiplier, then one per
  layer), objective the mean reward over k episodes on the backend, as Optuna studies
  that are in memory by default, resumable with an SQLite URL and shareable between
  processes, machines and chips with a PostgreSQL URL.
* :func:`calibrate_thresholds`: calibration without a grid and without episodes: per-neuron
  thresholds that reproduce the float network's firing rates on recorded observations.

Their episodes and costs come from :mod:`spiking_dqn.rollouts`.
"""

from spiking_dqn.search.calibration import CalibrationResult, CalibrationStep, calibrate_thresholds
from spiking_dqn.search.grid import DEFAULT_STAGE1_GRID, DEFAULT_STAGE2_FACTORS, apply_multipliers, threshold_search
from spiking_dqn.search.results import Evaluation, ThresholdSearchResult, best_evaluation
from spiking_dqn.search.storage import StorageUnavailableError, open_storage
from spiking_dqn.search.studies import SearchInterrupted

__all__ = [
    "DEFAULT_STAGE1_GRID",
    "DEFAULT_STAGE2_FACTORS",
    "CalibrationResult",
    "CalibrationStep",
    "Evaluation",
    "SearchInterrupted",
    "StorageUnavailableError",
    "ThresholdSearchResult",
    "apply_multipliers",
    "best_evaluation",
    "calibrate_thresholds",
    "open_storage",
    "threshold_search",
]
