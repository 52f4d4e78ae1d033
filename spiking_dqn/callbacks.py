"""SB3 callbacks for spiking Q-networks."""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from spiking_dqn.policies import SpikingDQNPolicy


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

    At the end of training (and every ``eval_freq`` steps when ``eval_freq > 0``):

    1. quantize the online Q-network into a chip program with ``lam``
       (:func:`spiking_dqn.quantization.quantize_network`);
    2. at the end of training only, when ``qat_steps > 0``: quantization-aware fine-tuning,
       ``qat_steps`` further DQN steps with fake-quantized weights
       (:func:`spiking_dqn.qat.quantization_aware_finetune`; the model's float weights
       change), then quantize again;
    3. choose the hidden thresholds on ``backend``: the two-stage grid search
       (``method="grid"``, :func:`spiking_dqn.search.threshold_search`), the calibration
       on replay-buffer observations (``method="calibrate"``,
       :func:`spiking_dqn.search.calibrate_thresholds`), both (``"both"``: the better on
       held-out episodes wins) or none (``"none"``);
    4. evaluate the float policy, the naive program (float threshold x lambda) and the
       chosen program on ``eval_episodes`` held-out episodes (seeds from ``seed + 100000``,
       not those of the search) and log under ``hardware/``: rewards, thresholds and
       multipliers, spikes and synaptic events per inference, estimated energy and latency
       per inference, and the backend cost of the search. The best program (of naive and
       searched) is kept.

    Files, in ``save_path/<tag>/`` (tag ``final`` or ``step_<n>``): ``best_program.npz``,
    ``summary.json``, and from the grid search ``threshold_search.csv``,
    ``threshold_search.json``, ``threshold_search.png`` (and ``calibration.json``).

    Every argument is a plain value, so rl-zoo can build the callback from the
    ``callback:`` key of a hyperparameter file.

    :param env_id: environment of the search episodes (default: the training env's id)
    :param lam: lambda: a number, one number per projection, or ``"auto"``
    :param eval_freq: also run steps 1, 3 and 4 every this many environment steps (0: only at the end)
    :param qat_steps: steps of quantization-aware fine-tuning at the end (0: none):
        environment steps (``qat_mode="online"``) or gradient steps (``"replay"``). Fine-tuned
        weights that are kept are snapped to the int8 grid (:func:`spiking_dqn.qat.snap_to_grid`):
        after ``learn()`` the model is the float twin of the chip program, and
        ``HardwarePolicy.from_model(model)`` quantizes it with the same lambdas
    :param qat_mode: ``"online"`` (default): more ``model.learn`` steps with the
        fake-quantized network acting and learning; ``"replay"``: gradient steps on the
        replay buffer only
    :param qat_learning_rate: QAT learning rate (default the model's final one, a tenth of
        it in replay mode)
    :param qat_grid_pull: pull of the float weights toward the int8 grid per QAT step
    :param qat_target_update_interval: QAT gradient steps between target-network updates
    :param qat_keep: ``"better"`` (default): evaluate the quantized network on the backend
        over ``search_episodes`` episodes before, during and after QAT and keep the best
        weights (those before QAT when QAT never did better); ``"always"``: keep the final ones
    :param method: ``"grid"``, ``"calibrate"``, ``"both"`` or ``"none"``
    :param stage1_grid: stage-1 global multipliers (default half-octaves 0.35 .. 4)
    :param stage2_factors: stage-2 per-layer factors (default quarter-octaves 0.84, 1, 1.19)
    :param search_episodes: episodes per grid point
    :param eval_episodes: held-out episodes of the evaluations in step 4
    :param calibration_observations: replay-buffer observations used by the calibration
    :param backend: ``"emulator"`` or ``"spinnaker2"``
    :param backend_options: options of the backend (e.g. ``{"eth_ip": "192.168.1.17"}``)
    :param storage: Optuna storage URL of the grid search (``None``: in memory); checked
        when training starts
    :param study_name: prefix of the study names (``<study_name>-<tag>-<program hash>``)
    :param save_path: output folder (default ``<logger folder>/hardware`` or ``./hardware_finetuning``)
    :param seed: seed of the search episodes (held-out evaluations use ``seed + 100000``)
    :param progress_bar: show the search progress bars
    :param verbose: 1 prints a summary of each run
    """

    METHODS = ("grid", "calibrate", "both", "none")

    def __init__(
        self,
        env_id: str | None = None,
        lam: float | list[float] | str = "auto",
        eval_freq: int = 0,
        qat_steps: int = 0,
        qat_learning_rate: float | None = None,
        qat_grid_pull: float = 0.002,
        qat_target_update_interval: int = 100,
        qat_keep: str = "better",
        qat_mode: str = "online",
        method: str = "grid",
        stage1_grid: list[float] | None = None,
        stage2_factors: list[float] | None = None,
        search_episodes: int = 10,
        eval_episodes: int = 20,
        calibration_observations: int = 128,
        backend: str = "emulator",
        backend_options: dict | None = None,
        storage: str | None = None,
        study_name: str = "threshold-search",
        save_path: str | None = None,
        seed: int = 0,
        progress_bar: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        from spiking_dqn.search.grid import DEFAULT_STAGE1_GRID, DEFAULT_STAGE2_FACTORS, check_grid

        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        for name, value, minimum in (
            ("eval_freq", eval_freq, 0),
            ("qat_steps", qat_steps, 0),
            ("search_episodes", search_episodes, 1),
            ("eval_episodes", eval_episodes, 1),
            ("calibration_observations", calibration_observations, 1),
            ("qat_target_update_interval", qat_target_update_interval, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not 0.0 <= float(qat_grid_pull) <= 1.0:
            raise ValueError(f"qat_grid_pull must be in [0, 1], got {qat_grid_pull}")
        self.env_id = env_id
        self.lam = lam
        self.eval_freq = eval_freq
        self.qat_steps = qat_steps
        self.qat_learning_rate = qat_learning_rate
        self.qat_grid_pull = float(qat_grid_pull)
        self.qat_target_update_interval = qat_target_update_interval
        if qat_keep not in ("better", "always"):
            raise ValueError(f"qat_keep must be 'better' or 'always', got {qat_keep!r}")
        self.qat_keep = qat_keep
        if qat_mode not in ("online", "replay"):
            raise ValueError(f"qat_mode must be 'online' or 'replay', got {qat_mode!r}")
        self.qat_mode = qat_mode
        self.method = method
        self.stage1_grid = check_grid(DEFAULT_STAGE1_GRID if stage1_grid is None else stage1_grid, "stage1_grid")
        self.stage2_factors = check_grid(
            DEFAULT_STAGE2_FACTORS if stage2_factors is None else stage2_factors, "stage2_factors"
        )
        self.search_episodes = search_episodes
        self.eval_episodes = eval_episodes
        self.calibration_observations = calibration_observations
        self.backend_name = backend
        self.backend_options = dict(backend_options or {})
        self.storage = storage
        self.study_name = study_name
        self.save_path = save_path
        self.seed = int(seed)
        self.progress_bar = progress_bar
        self.results: list[dict] = []
        self.last_summary: dict = {}
        self.best_program = None

    # ------------------------------------------------------------------ SB3 hooks

    def _init_callback(self) -> None:
        from pathlib import Path

        from spiking_dqn.hardware import get_backend
        from spiking_dqn.search.studies import open_storage

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
        if self.storage is not None and self.method in ("grid", "both"):
            open_storage(self.storage)  # a storage that cannot be reached fails now, before training
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
        if getattr(self, "_final_done", False):
            return
        self._final_done = True
        self.run_hardware_stage("final", final=True)

    # ------------------------------------------------------------------ the work

    def _replay_observations(self) -> np.ndarray | None:
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is None or buffer.size() == 0:
            return None
        n = buffer.buffer_size if buffer.full else buffer.pos
        obs = np.asarray(buffer.observations[:n]).reshape(n * buffer.n_envs, -1).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(obs), size=min(self.calibration_observations, len(obs)), replace=False)
        return obs[np.sort(pick)]

    def run_hardware_stage(self, tag: str, final: bool) -> dict:
        """Quantize, (QAT), search, evaluate, log and save; return the summary (also in ``last_summary``)."""
        import json
        import time
        from pathlib import Path

        from spiking_dqn.hardware import estimate_energy
        from spiking_dqn.qat import quantization_aware_finetune, snap_model_to_grid
        from spiking_dqn.quantization import quantize_network
        from spiking_dqn.search.calibration import calibrate_thresholds
        from spiking_dqn.search.episodes import backend_reward, float_reward
        from spiking_dqn.search.grid import program_fingerprint, threshold_search

        start = time.perf_counter()
        out = Path(self.save_path) / tag
        out.mkdir(parents=True, exist_ok=True)
        net = self.model.policy.q_net.q_net
        was_training = net.training
        net.eval()
        program, report = quantize_network(net, self.lam)
        lambdas = list(program.lambdas)
        eval_seed = self.seed + 100_000

        def evaluate(candidate):
            return backend_reward(candidate, self.env_id, self.eval_episodes, seed=eval_seed, backend=self.backend)

        summary: dict = {
            "tag": tag,
            "num_timesteps": int(self.num_timesteps),
            "env_id": self.env_id,
            "backend": self.backend_name,
            "lambdas": lambdas,
            "quantization": report.to_dict(),
            "eval_episodes": self.eval_episodes,
            "eval_seed": eval_seed,
        }
        summary["reward_float"] = float_reward(net, self.env_id, self.eval_episodes, seed=eval_seed).mean_reward
        naive = evaluate(program)
        summary["reward_naive"] = naive.mean_reward
        summary["naive_thresholds"] = [float(np.mean(t)) for t in program.thresholds[:-1]]

        if final and self.qat_steps > 0:
            qat = quantization_aware_finetune(
                self.model,
                lambdas,
                self.qat_steps,
                mode=self.qat_mode,
                learning_rate=self.qat_learning_rate,
                grid_pull=self.qat_grid_pull,
                target_update_interval=self.qat_target_update_interval,
                env_id=self.env_id,
                seed=self.seed,
                check_episodes=self.search_episodes if self.qat_keep == "better" else 0,
                check_seed=self.seed,
                backend=self.backend,
            )
            if qat.kept:
                # The network QAT trained is the fake-quantized one: make the float model compute it
                # (and record its grid, so that lam="auto" deploys the saved model with these lambdas).
                snap_model_to_grid(self.model, qat.lambdas)
            net.eval()
            program, report = quantize_network(net, qat.lambdas)
            summary["qat"] = qat.to_dict()
            summary["reward_float_after_qat"] = float_reward(
                net, self.env_id, self.eval_episodes, seed=eval_seed
            ).mean_reward
            naive = evaluate(program)
            summary["reward_after_qat"] = naive.mean_reward

        candidates = {"naive": (program, naive, [1.0] * (len(program.thresholds) - 1))}
        if self.method in ("grid", "both"):
            fingerprint = program_fingerprint(program)[:12]
            search = threshold_search(
                program,
                self.env_id,
                backend=self.backend,
                stage1_grid=self.stage1_grid,
                stage2_factors=self.stage2_factors,
                n_episodes=self.search_episodes,
                seed=self.seed,
                storage=self.storage,
                study_name=f"{self.study_name}-{tag}-{fingerprint}",
                progress_bar=self.progress_bar,
                output_dir=out,
            )
            candidates["grid"] = (search.program, evaluate(search.program), search.best.multipliers)
            summary["grid_search"] = {
                "best_multipliers": search.best.multipliers,
                "best_search_reward": search.best.mean_reward,
                "backend_episodes": search.backend_episodes,
                "backend_inferences": search.backend_inferences,
                "wall_time_s": search.wall_time_s,
                "files": {k: v for k, v in search.files.items() if k != "program"},
            }
        if self.method in ("calibrate", "both"):
            observations = self._replay_observations()
            calibration = calibrate_thresholds(
                net,  # after QAT: snapped to the grid, the network that was trained
                program,
                observations,
                env_id=self.env_id,
                n_observations=self.calibration_observations,
                backend=self.backend,
                seed=self.seed + 10_000,
            )
            files = calibration.save(out)
            candidates["calibration"] = (calibration.program, evaluate(calibration.program), calibration.multipliers)
            summary["calibration"] = {
                "multipliers": calibration.multipliers,
                "agreement": calibration.agreement,
                "backend_inferences": calibration.backend_inferences,
                "wall_time_s": calibration.wall_time_s,
                "files": files,
            }
        for name, (_, result, _) in candidates.items():
            summary[f"reward_{name}" if name != "naive" else "reward_naive_final"] = result.mean_reward
        chosen_name = min(
            candidates,
            key=lambda k: (-candidates[k][1].mean_reward, candidates[k][1].synaptic_events_per_inference),
        )
        best_program, best_result, multipliers = candidates[chosen_name]
        energy = estimate_energy({"synaptic_events": [best_result.synaptic_events_per_inference]}, best_program)
        summary.update(
            chosen=chosen_name,
            reward=best_result.mean_reward,
            thresholds=[float(np.mean(t)) for t in best_program.thresholds[:-1]],
            threshold_multipliers=[float(m) for m in multipliers],
            spikes_per_inference=best_result.hidden_spikes_per_inference,
            synaptic_events_per_inference=best_result.synaptic_events_per_inference,
            energy=energy.to_dict(),
            wall_time_s=time.perf_counter() - start,
        )
        best_program.save(out / "best_program.npz")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        summary["files"] = {"program": str(out / "best_program.npz"), "summary": str(out / "summary.json")}
        self._log(summary, energy)
        self.best_program = best_program
        self.last_summary = summary
        self.results.append(summary)
        if was_training:
            net.train()
        if self.verbose:
            print(
                f"[hardware {tag}] float {summary['reward_float']:.1f}, naive {summary['reward_naive']:.1f}, "
                f"{chosen_name} {summary['reward']:.1f} (thresholds {[round(t, 3) for t in summary['thresholds']]}); "
                f"saved to {out}"
            )
        return summary

    def _log(self, summary: dict, energy) -> None:
        record = self.logger.record
        record("hardware/reward", summary["reward"])
        record("hardware/reward_float", summary["reward_float"])
        record("hardware/reward_naive", summary["reward_naive"])
        for key in ("reward_after_qat", "reward_grid", "reward_calibration"):
            if key in summary:
                record(f"hardware/{key}", summary[key])
        for k, (t, m) in enumerate(zip(summary["thresholds"], summary["threshold_multipliers"])):
            record(f"hardware/threshold_{k}", t)
            record(f"hardware/threshold_multiplier_{k}", m)
        record("hardware/spikes_per_inference", summary["spikes_per_inference"])
        record("hardware/synaptic_events_per_inference", summary["synaptic_events_per_inference"])
        record("hardware/energy_per_inference_j", energy.total_energy_j)
        record("hardware/latency_s", energy.latency_s)
        if "grid_search" in summary:
            record("hardware/search_backend_inferences", summary["grid_search"]["backend_inferences"])
            record("hardware/search_backend_episodes", summary["grid_search"]["backend_episodes"])
        if "calibration" in summary:
            record("hardware/calibration_backend_inferences", summary["calibration"]["backend_inferences"])
        if "qat" in summary:
            record("hardware/qat_grid_distance", float(np.mean(summary["qat"]["grid_distance_after"])))
            record("hardware/qat_kept", float(summary["qat"]["kept"]))
        self.logger.dump(self.num_timesteps)
