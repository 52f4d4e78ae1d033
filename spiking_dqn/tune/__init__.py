"""``spiking-dqn tune``: a two-objective Optuna search for spiking DQN recipes, shared by many workers.

Each trial samples SB3 DQN hyperparameters and spiking options (:mod:`~spiking_dqn.tune.space`,
the search space declared once), trains, deploys the agent to the emulated chip with a cheap
:func:`~spiking_dqn.pipeline.fit_to_chip` and returns the program's held-out chip reward
(maximized) and its synaptic events per inference (minimized)
(:mod:`~spiking_dqn.tune.objective`). Intermediate float rewards feed a median-rule pruner kept
in user attributes, since Optuna has no pruning for multi-objective studies
(:mod:`~spiking_dqn.tune.pruning`). Workers share the study through its storage, exactly N trials
in all, and a killed run resumes (:mod:`~spiking_dqn.tune.workers`). The front, the recommended
trial (:mod:`~spiking_dqn.tune.front`) and its ``zoo_configs/dqn.yml`` entry
(:mod:`~spiking_dqn.tune.export`) are the outputs of :func:`~spiking_dqn.tune.tuner.tune`.
"""

from spiking_dqn.tune.objective import TuneSettings
from spiking_dqn.tune.tuner import default_study_name, tune
from spiking_dqn.tune.workers import TuneError

__all__ = ["TuneError", "TuneSettings", "default_study_name", "tune"]
