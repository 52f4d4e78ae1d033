"""SB3 callbacks for spiking Q-networks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from spiking_dqn.hardware.backend import get_backend
from spiking_dqn.pipeline import (
    EVAL_EPISODES,
    METHODS,
    CalibrationSettings,
    FitResult,
    QATSettings,
    SearchSettings,
    Seeds,
    StateSettings,
    as_settings,
    fit_to_chip,
)
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.widths import check_weight_bits
from spiking_dqn.quantization import LambdaSpec, WeightBitsSpec
from spiking_dqn.search.storage import open_storage


def activity_summary(counts: list[th.Tensor], ticks: int, delay: int, saturation: float = 0.95) -> dict[str, float]:
    """Spike statistics of one batch of inferences.

    :param counts: spike counts over the ticks per population, ``(batch, n)`` each: the
        input neurons first, then every hidden layer
    :param ticks: ticks per inference
    :param delay: synaptic delay (hidden layer ``i`` can fire in ``ticks - (i + 1) * delay`` ticks)
    :param saturation: a neuron is saturated when its mean count reaches this fraction of
        the ticks in which it can fire
    :return: ``{name: value}`` with ``<pop>_rate`` (spikes per neuron per tick),
        ``<pop>_silent_frac`` and ``<pop>_saturated_frac`` for each hidden layer, the
        input rate, and ``spikes_per_inference`` (all hidden spikes)
    """
    out: dict[str, float] = {"input_rate": float(counts[0].float().mean()) / ticks}
    total = 0.0
    for i, layer in enumerate(counts[1:]):
        layer = layer.float()
        reachable = max(ticks - (i + 1) * delay, 1)
        mean_per_neuron = layer.mean(0)
        out[f"hidden{i + 1}_rate"] = float(mean_per_neuron.mean()) / ticks
        out[f"hidden{i + 1}_silent_frac"] = float((layer.sum(0) == 0).float().mean())
        out[f"hidden{i + 1}_saturated_frac"] = float((mean_per_neuron >= saturation * reachable).float().mean())
        total += float(layer.sum(1).mean())
    out["spikes_per_inference"] = total
    return out


class SpikeActivityLogger(BaseCallback):
    """Log the spiking activity of the Q-network to the SB3 logger (TensorBoard).

    Every ``log_freq`` environment steps it runs the online Q-network on observations
    drawn from the replay buffer and records, under ``spikes/``, per-layer spike rates and
    the fractions of silent and saturated neurons.

    :param log_freq: environment steps between two measurements
    :param n_samples: observations per measurement
    :param verbose: verbosity
    """

    def __init__(self, log_freq: int = 1000, n_samples: int = 256, verbose: int = 0) -> None:
        super().__init__(verbose)
        if log_freq < 1 or n_samples < 1:
            raise ValueError("log_freq and n_samples must be positive")
        self.log_freq = log_freq
        self.n_samples = n_samples
        self.last: dict[str, float] = {}

    def _init_callback(self) -> None:
        if not isinstance(self.model.policy, SpikingDQNPolicy):
            raise TypeError(f"SpikeActivityLogger needs a SpikingDQNPolicy, got {type(self.model.policy).__name__}")

    def _on_step(self) -> bool:
        if self.n_calls % self.log_freq != 0:
            return True
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is None or buffer.size() == 0:
            return True
        obs = buffer.sample(min(self.n_samples, buffer.size())).observations
        q_net = self.model.policy.q_net
        with th.no_grad():
            _, counts = q_net.forward_with_activity(obs)
        net = q_net.q_net
        self.last = activity_summary(counts, net.ticks, net.synaptic_delay)
        for key, value in self.last.items():
            self.logger.record(f"spikes/{key}", value)
        return True


class HardwareAwareFineTuning(BaseCallback):
    """Fit a spiking DQN to the chip: quantize, optionally QAT, search thresholds, log and save.

    At the end of training (and every ``eval_freq`` steps when ``eval_freq > 0``) it runs
    :func:`spiking_dqn.pipeline.fit_to_chip` on the model being trained:

    1. quantize the online Q-network into a chip program with ``lam`` at ``weight_bits``
       (:func:`spiking_dqn.quantization.quantize_network`), with ``state.bits`` of membrane
       state levels when given (:mod:`spiking_dqn.quantization.levels`);
    2. at the end of training only, by default (``qat=None``) or when ``qat.steps > 0``: fine-tuning for the chip
       (:func:`spiking_dqn.qat.quantization_aware_finetune`, by default distillation from the
       float network, ``qat.mode="distill"``; the model's float weights change, and kept
       weights are snapped to the grid, so that after ``learn()`` the model is the float twin
       of the chip program; with ``state.bits`` the state levels are in its forward: SQUAT),
       then quantize again. The plain post-training programs (quantized before it, as they
       are and calibrated) stay candidates: the callback never returns a program worse than
       them on the held-out episodes, and when one of them wins the weights before
       fine-tuning are put back;
    3. choose the hidden thresholds on ``backend``: the two-stage grid search
       (``method="grid"``, :func:`spiking_dqn.search.threshold_search`), the calibration
       on replay-buffer observations (``method="calibrate"``,
       :func:`spiking_dqn.search.calibrate_thresholds`), both (``"both"``: the better on
       held-out episodes wins) or none (``"none"``);
    4. evaluate the float policy, the naive program (float threshold x lambda) and the
       chosen program on ``eval_episodes`` held-out episodes (``Seeds.from_base(seed)``:
       not those of the search) and log under ``hardware/``: rewards, thresholds and
       multipliers, spikes and synaptic events per inference, estimated energy and latency
       per inference, and the backend cost of the search, and the gap between the float and
       the chosen program's rewards on the same episodes with its noise (``hardware/gap``,
       ``hardware/gap_noise``; ``verbose=1`` prints it, and warns when it is larger). The
       best program of all candidates is kept.

    Files, in ``save_path/<tag>/`` (tag ``final`` or ``step_<n>``): ``best_program.npz``,
    ``summary.json``, and from the grid search ``threshold_search.csv``,
    ``threshold_search.json``, ``threshold_search.png`` (and ``calibration.json``).

    The settings are those of a fit (:mod:`spiking_dqn.pipeline.settings`, which checks
    them), each given as the settings object or as a mapping of its fields, so that rl-zoo
    can build the callback from the ``callback:`` key of a hyperparameter file, e.g.
    ``qat: {steps: 2000, mode: replay}``.

    :param env_id: environment of the search episodes (default: the training env's id)
    :param lam: lambda: ``None`` (default: the network's own grid if it has one, else
        ``"auto"``), ``"auto"``, ``"mse"`` (the better rule below 8 bits), a number, or one
        number per projection
    :param weight_bits: bits per weight of the chip program and of QAT, 2..8: one integer for
        every projection or a list with one per projection (e.g. 4 or ``[8, 4, 8]``; 2 is
        ternary); ``None`` (default): the network's own grid's, else 8 (int8)
    :param qat: :class:`~spiking_dqn.pipeline.QATSettings` of the fine-tuning at the end
        (default ``None``: :data:`~spiking_dqn.pipeline.ROBUST_QAT`, 2000 steps of distillation,
        unless the network was already fit to a grid, see :func:`~spiking_dqn.pipeline.default_qat`;
        ``QATSettings()`` or ``{steps: 0}``: none; with ``steps``, distillation unless ``mode``
        says ``"online"`` or ``"replay"``); ``check_episodes=0`` keeps the weights QAT ends with
        instead of the best checked ones
    :param state: :class:`~spiking_dqn.pipeline.StateSettings` (default: float32 state)
    :param search: :class:`~spiking_dqn.pipeline.SearchSettings` of the grid search; its
        storage is checked when training starts, and each stage's studies are named
        ``<study_name>-<tag>`` (the search adds the program's key)
    :param calibration: :class:`~spiking_dqn.pipeline.CalibrationSettings`; the observations
        are drawn from the replay buffer
    :param method: ``"grid"``, ``"calibrate"``, ``"both"`` or ``"none"``
    :param eval_freq: also run steps 1, 3 and 4 every this many environment steps (0: only at the end)
    :param eval_episodes: held-out episodes of the evaluations in step 4
    :param backend: ``"emulator"`` or ``"spinnaker2"``
    :param backend_options: options of the backend (e.g. ``{"eth_ip": "192.168.1.17"}``)
    :param save_path: output folder (default ``<logger folder>/hardware`` or ``./hardware_finetuning``)
    :param seed: base of the episode seeds (:meth:`spiking_dqn.pipeline.Seeds.from_base`: search
        episodes from ``seed``, calibration from ``seed + 10000``, QAT checks from ``seed + 50000``,
        held-out evaluations from ``seed + 100000``)
    :param progress_bar: show the search progress bars
    :param verbose: 1 prints a summary of each run
    """

    def __init__(
        self,
        env_id: str | None = None,
        lam: LambdaSpec = None,
        weight_bits: WeightBitsSpec = None,
        qat: QATSettings | Mapping[str, Any] | None = None,
        state: StateSettings | Mapping[str, Any] | None = None,
        search: SearchSettings | Mapping[str, Any] | None = None,
        calibration: CalibrationSettings | Mapping[str, Any] | None = None,
        method: str = "grid",
        eval_freq: int = 0,
        eval_episodes: int = EVAL_EPISODES,
        backend: str = "emulator",
        backend_options: dict | None = None,
        save_path: str | None = None,
        seed: int = 0,
        progress_bar: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        check_int(eval_freq, "eval_freq", 0)
        check_int(eval_episodes, "eval_episodes", 1)
        if weight_bits is not None:
            check_weight_bits(weight_bits)  # the values now; their count once the network is known
        self.env_id = env_id
        self.lam = lam
        self.weight_bits = weight_bits
        self.qat = None if qat is None else as_settings(qat, QATSettings)  # None: fit_to_chip's default_qat
        self.state = as_settings(state, StateSettings)
        self.search = as_settings(search, SearchSettings)
        self.calibration = as_settings(calibration, CalibrationSettings)
        self.method = method
        self.eval_freq = eval_freq
        self.eval_episodes = eval_episodes
        self.backend_name = backend
        self.backend_options = dict(backend_options or {})
        self.backend = None
        self.save_path = save_path
        self.seed = int(seed)
        self.seeds = Seeds.from_base(self.seed)
        self.progress_bar = progress_bar
        self.results: list[dict] = []
        self.last_summary: dict = {}
        self.best_program = None
        self._final_done = False

    # ------------------------------------------------------------------ SB3 hooks

    def _init_callback(self) -> None:
        if not isinstance(self.model.policy, SpikingDQNPolicy):
            raise TypeError(
                f"HardwareAwareFineTuning needs a SpikingDQNPolicy, got {type(self.model.policy).__name__}"
            )
        if self.env_id is None:
            specs = self.training_env.get_attr("spec")
            if not specs or specs[0] is None:
                raise ValueError("cannot tell the training env's id; pass env_id=...")
            self.env_id = specs[0].id
        self.backend = get_backend(self.backend_name, **self.backend_options)
        if self.search.storage is not None and self.method in ("grid", "both"):
            open_storage(self.search.storage)  # a storage that cannot be reached fails now, before training
        if self.save_path is None:
            folder = self.logger.get_dir() if self.logger is not None else None
            self.save_path = str(Path(folder) / "hardware") if folder else "hardware_finetuning"
        Path(self.save_path).mkdir(parents=True, exist_ok=True)

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            self.run_hardware_stage(f"step_{self.num_timesteps}", final=False)
        return True

    def _on_training_start(self) -> None:
        self._final_done = False

    def _on_training_end(self) -> None:
        # rl-zoo calls on_training_end() a second time after learn() returns: run once.
        if self._final_done:
            return
        self._final_done = True
        self.run_hardware_stage("final", final=True)

    # ------------------------------------------------------------------ the work

    def _replay_observations(self) -> np.ndarray | None:
        buffer = self.model.replay_buffer
        if buffer is None or buffer.size() == 0:
            return None
        n = buffer.buffer_size if buffer.full else buffer.pos
        obs = np.asarray(buffer.observations[:n]).reshape(n * buffer.n_envs, -1).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(obs), size=min(self.calibration.n_observations, len(obs)), replace=False)
        return obs[np.sort(pick)]

    def run_hardware_stage(self, tag: str, final: bool) -> dict:
        """Fit the model to the chip now (:func:`~spiking_dqn.pipeline.fit_to_chip`), log and save.

        :param tag: name of the stage (its folder under ``save_path``)
        :param final: the end of training (the only stage that runs QAT)
        :return: the summary (also in ``last_summary``)
        """
        out = Path(self.save_path) / tag
        result = fit_to_chip(
            self.model,
            self.env_id,
            lam=self.lam,
            weight_bits=self.weight_bits,
            qat=self.qat if final else QATSettings(),
            state=self.state,
            method=self.method,
            search=dataclasses.replace(self.search, study_name=f"{self.search.study_name}-{tag}"),
            calibration=dataclasses.replace(self.calibration, observations=self._replay_observations()),
            backend=self.backend,
            seeds=self.seeds,
            eval_episodes=self.eval_episodes,
            out=out,
            progress=self.progress_bar,
            labels={"tag": tag, "num_timesteps": int(self.num_timesteps)},
        )
        summary = result.summary()
        self._log(result, summary)
        self.best_program = result.program
        self.last_summary = summary
        self.results.append(summary)
        if self.verbose:
            print(
                f"[hardware {tag}] float {summary['reward_float']:.1f}, naive {summary['reward_naive']:.1f}, "
                f"{result.chosen} {summary['reward']:.1f} (thresholds {[round(t, 3) for t in summary['thresholds']]}); "
                f"saved to {out}\n[hardware {tag}] {result.gap_line()}"
            )
        return summary

    def _log(self, result: FitResult, summary: dict) -> None:
        record = self.logger.record
        record("hardware/reward", summary["reward"])
        record("hardware/reward_float", summary["reward_float"])
        record("hardware/reward_naive", summary["reward_naive"])
        record("hardware/gap", summary["gap"])
        record("hardware/gap_noise", summary["gap_noise"])
        for key in ("reward_after_qat", "reward_grid", "reward_calibration", "reward_ptq"):
            if key in summary:
                record(f"hardware/{key}", summary[key])
        for k, (t, m) in enumerate(zip(summary["thresholds"], summary["threshold_multipliers"])):
            record(f"hardware/threshold_{k}", t)
            record(f"hardware/threshold_multiplier_{k}", m)
        record("hardware/spikes_per_inference", summary["spikes_per_inference"])
        record("hardware/synaptic_events_per_inference", summary["synaptic_events_per_inference"])
        record("hardware/energy_per_inference_j", result.energy.total_energy_j)
        record("hardware/latency_s", result.energy.latency_s)
        if result.search is not None:
            record("hardware/search_backend_inferences", result.search.backend_inferences)
            record("hardware/search_backend_episodes", result.search.backend_episodes)
        if result.calibration is not None:
            record("hardware/calibration_backend_inferences", result.calibration.backend_inferences)
        if result.qat is not None:
            record("hardware/qat_grid_distance", float(np.mean(result.qat.grid_distance_after)))
            record("hardware/qat_kept", float(result.qat.kept))
        self.logger.dump(self.num_timesteps)
