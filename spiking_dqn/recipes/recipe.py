"""The shared ``model.learn()`` recipe (``spiking-dqn train``, ``agents/``): train, fine-tune, evaluate.

1. Training: SB3 ``DQN`` with ``SpikingDQNPolicy``, a :class:`~spiking_dqn.SpikeActivityLogger`
   and an ``EvalCallback`` whose best periodic evaluation is kept as ``model_trained.zip``.
2. Quantization-aware fine-tuning (``qat_steps``, 0 to skip):
   :func:`~spiking_dqn.qat.quantization_aware_finetune` on the int8 grid of ``lam="auto"``,
   keeping the weights that did best on the emulator, then
   :func:`~spiking_dqn.quantization.snap.snap_model_to_grid`. ``model.zip`` is then the float twin of the
   chip program that ``HardwarePolicy.from_model`` builds from it.
3. Evaluation of ``model.zip`` (and of the agent as trained) over ``eval_episodes``
   deterministic episodes, written to ``eval.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import CallbackList, EvalCallback, ProgressBarCallback
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env, make_vec
from spiking_dqn.callbacks import SpikeActivityLogger
from spiking_dqn.cli.arguments import non_negative_int, positive_float, positive_floats, positive_int, positive_ints
from spiking_dqn.cli.hyperparams import qat_learning_rate
from spiking_dqn.dqn import SpikingDQN
from spiking_dqn.network import SpikingConfig
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.thresholds import ThresholdNoise
from spiking_dqn.qat import quantization_aware_finetune
from spiking_dqn.quantization.snap import snap_model_to_grid

#: The policy_kwargs keys that are spiking options (checked by ``SpikingConfig``).
SPIKING_OPTIONS = frozenset(f.name for f in dataclasses.fields(SpikingConfig))
#: The agent as trained (best periodic evaluation), before quantization-aware fine-tuning.
TRAINED_NAME = "model_trained.zip"
#: Seeds of the final evaluation and of the QAT reward checks (apart from the training seeds).
EVAL_SEED = 12345
QAT_CHECK_SEED = 50_000
QAT_CHECK_EPISODES = 20
#: QAT steps between those checks (the fine-tuned weights kept are the best checked ones).
QAT_CHECK_FREQ = 1000
#: Env-seed offset of the periodic evaluations that pick the best model.
SELECT_SEED_OFFSET = 1000
#: What ``eval.json`` keeps from training when ``qat_only`` rewrites it.
TRAINING_KEYS = ("timesteps", "seed", "train_wall_time_s", "select_episodes", "eval_freq", "torch_threads", "machine")
#: Notes about the training run added to ``eval.json`` later (a re-measured wall time), kept
#: too when ``qat_only`` rewrites it; a new training run starts without them.
TRAINING_NOTES = ("train_wall_time_remeasured",)


@dataclass
class TrainOptions:
    """How to train, fine-tune and evaluate (the options of ``spiking-dqn train`` and of the recipes).

    :param out: output folder (``model.zip``, ``model_trained.zip``, ``eval.json``)
    :param timesteps: environment steps of training
    :param seed: random seed (training env ``seed``, selection env ``seed + 1000``, QAT ``seed``)
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param eval_freq: steps between the periodic evaluations that pick the best model
    :param select_episodes: episodes of each periodic evaluation
    :param eval_episodes: episodes of the final evaluation
    :param qat_steps: quantization-aware fine-tuning steps after training (0: none)
    :param qat_only: skip training; fine-tune the agent as trained, ``out / model_trained.zip``
    :param progress: show the training progress bar
    :param net_arch: override the hidden layer sizes
    :param ticks: override the ticks per inference
    :param obs_bound: override the encoder bounds, one per observation dimension
    :param threshold_noise: ASPEN threshold noise in training (``SpikingConfig.threshold_noise``
        spec, e.g. ``"1.0,1.5"`` or ``"levels:1.0,1.5,2.0"``), None: keep the hyperparameters'
    :param activity_penalty: activity penalty coefficient, None: keep the hyperparameters'
    :param encoding: input encoding mode, None: keep the hyperparameters'
    :param encoding_alpha: hybrid coding's threshold slope, None: keep the hyperparameters'
    :param qat_learning_rate: learning rate of the QAT (None: the env's entry of
        :data:`~spiking_dqn.cli.hyperparams.QAT_LEARNING_RATES`, else the training's final one)
    """

    out: Path
    timesteps: int
    seed: int = 0
    tensorboard_log: str | None = None
    eval_freq: int = 2500
    select_episodes: int = 50
    eval_episodes: int = 100
    qat_steps: int = 10_000
    qat_only: bool = False
    progress: bool = True
    net_arch: list[int] | None = None
    ticks: int | None = None
    obs_bound: list[float] | None = None
    threshold_noise: str | None = None
    activity_penalty: float | None = None
    encoding: str | None = None
    encoding_alpha: float | None = None
    qat_learning_rate: float | None = None


class BoundedProgressBar(ProgressBarCallback):
    """SB3's progress bar, stopped at the requested total.

    ``learn`` collects whole rollouts of ``train_freq`` steps, so the last one may run past
    ``total_timesteps``; the bar counts only up to it.
    """

    def _on_step(self) -> bool:
        remaining = max(int(self.pbar.total) - int(self.pbar.n), 0)
        self.pbar.update(min(self.training_env.num_envs, remaining))
        return True


def add_training_arguments(
    parser: argparse.ArgumentParser,
    default_out: Path | None,
    default_timesteps: int | None,
    timesteps_help: str = "environment steps to train for",
    out_help: str = "output folder (model.zip, model_trained.zip, eval.json, README.md)",
) -> None:
    """Add the training options to ``parser`` (``spiking-dqn train`` and the recipes share them).

    :param parser: the parser
    :param default_out: default of ``--out`` (None: decided by the command)
    :param default_timesteps: default of ``--timesteps`` (None: decided by the command)
    :param timesteps_help: help text of ``--timesteps``
    :param out_help: help text of ``--out``
    """
    parser.add_argument("--timesteps", type=positive_int, default=default_timesteps, help=timesteps_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed (training, best-model selection, QAT)")
    parser.add_argument("--out", type=Path, default=default_out, help=out_help)
    parser.add_argument("--tensorboard-log", type=str, default=None, help="TensorBoard log folder")
    parser.add_argument("--eval-freq", type=positive_int, default=2500,
                        help="steps between the periodic evaluations that pick the best model")
    parser.add_argument("--eval-episodes", type=positive_int, default=100, help="episodes of the final evaluation")
    parser.add_argument("--select-episodes", type=positive_int, default=50,
                        help="episodes of each periodic evaluation that picks the best model")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--qat-steps", type=non_negative_int, default=10_000,
        help="quantization-aware fine-tuning steps after training (0: none); model.zip is then the float twin of "
        "the int8 chip program",
    )
    parser.add_argument("--qat-learning-rate", type=positive_float, default=None,
                        help="learning rate of the QAT (default: the env's entry of QAT_LEARNING_RATES in "
                        "spiking_dqn/cli/hyperparams.py, else the training's final one)")
    parser.add_argument("--qat-only", action="store_true",
                        help="skip training: fine-tune the agent as trained (model_trained.zip in --out)")
    parser.add_argument("--net-arch", type=positive_ints, default=None,
                        help="override the hidden layer sizes, e.g. 128,128")
    parser.add_argument("--ticks", type=positive_int, default=None, help="override the ticks per inference")
    parser.add_argument("--obs-bound", type=positive_floats, default=None,
                        help="override the encoder bounds, one per observation dimension, e.g. 1,1,1,1,6,12")
    parser.add_argument("--threshold-noise", type=str, default=None,
                        help="ASPEN stochastic thresholds in training: LOW,HIGH for U(LOW, HIGH), or levels:A,B,C for "
                        "discrete factors, e.g. 1.0,1.5")
    parser.add_argument("--activity-penalty", type=float, default=None,
                        help="coefficient of the activity penalty (mean synaptic events per inference) added to the loss")
    parser.add_argument("--encoding", choices=["deterministic", "poisson", "hybrid"], default=None,
                        help="input spike encoding (hybrid: thresholds lowered with the input, NeuEdge)")
    parser.add_argument("--encoding-alpha", type=float, default=None,
                        help="hybrid coding's threshold slope alpha in [0, 1): input thresholds 1 - alpha * rate")


def training_options(args: argparse.Namespace) -> TrainOptions:
    """The :class:`TrainOptions` of parsed training options.

    :param args: options added by :func:`add_training_arguments`, ``out`` and ``timesteps`` set
    :raises ValueError: ``--qat-only`` without the agent as trained in ``--out``, or an
        override the spiking options refuse (e.g. ``--threshold-noise 1.5,1.0``)
    """
    if args.qat_only and not (Path(args.out) / TRAINED_NAME).exists():
        raise ValueError(f"--qat-only needs the agent as trained: {Path(args.out) / TRAINED_NAME} does not exist")
    options = TrainOptions(
        out=Path(args.out), timesteps=args.timesteps, seed=args.seed, tensorboard_log=args.tensorboard_log,
        eval_freq=args.eval_freq, select_episodes=args.select_episodes, eval_episodes=args.eval_episodes,
        qat_steps=args.qat_steps, qat_only=args.qat_only, progress=not args.no_progress, net_arch=args.net_arch,
        ticks=args.ticks, obs_bound=args.obs_bound, threshold_noise=args.threshold_noise,
        activity_penalty=args.activity_penalty, encoding=args.encoding, encoding_alpha=args.encoding_alpha,
        qat_learning_rate=args.qat_learning_rate,
    )
    with_overrides({}, options)  # the overrides' own checks, before any training
    return options


def with_overrides(hyperparams: dict[str, Any], options: TrainOptions) -> dict[str, Any]:
    """``hyperparams`` with the spiking-option overrides of ``options`` applied.

    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included
    :param options: the overrides (None: keep)
    :raises ValueError: an override the spiking options refuse (checked here, before training)
    """
    policy_kwargs = dict(hyperparams.get("policy_kwargs", {}))
    if options.net_arch is not None:
        policy_kwargs["net_arch"] = list(options.net_arch)
    if options.ticks is not None:
        policy_kwargs["ticks"] = options.ticks
    if options.obs_bound is not None:
        policy_kwargs["obs_bound"] = list(options.obs_bound)
    if options.threshold_noise is not None:
        noise = ThresholdNoise.from_spec(options.threshold_noise)
        policy_kwargs["threshold_noise"] = None if noise is None else noise.to_spec()
    if options.activity_penalty is not None:
        policy_kwargs["activity_penalty"] = float(options.activity_penalty)
    if options.encoding is not None:
        policy_kwargs["encoding"] = options.encoding
    if options.encoding_alpha is not None:
        policy_kwargs["encoding_alpha"] = float(options.encoding_alpha)
    spiking = {key: value for key, value in policy_kwargs.items() if key in SPIKING_OPTIONS}
    SpikingConfig(**spiking)  # the same checks as the policy's, before any training
    return {**hyperparams, "policy_kwargs": policy_kwargs}


def train_model(env_id: str, hyperparams: dict[str, Any], options: TrainOptions, path: Path) -> dict[str, Any]:
    """Train with ``model.learn()`` and save the best periodically evaluated model to ``path``.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included
    :param options: timesteps, seed, evaluation and logging options
    :param path: where the model is saved
    :return: the training record (timesteps, seed, wall time, selection, machine)
    """
    out = options.out
    env = make_vec(env_id, n_envs=1, seed=options.seed)
    model = SpikingDQN(SpikingDQNPolicy, env, seed=options.seed, tensorboard_log=options.tensorboard_log, verbose=0,
                **hyperparams)
    eval_env = make_vec(env_id, n_envs=1, seed=options.seed + SELECT_SEED_OFFSET)
    best_dir = out / "best"
    callbacks: list[Any] = [
        SpikeActivityLogger(log_freq=1000),
        EvalCallback(
            eval_env,
            n_eval_episodes=options.select_episodes,
            eval_freq=options.eval_freq,
            best_model_save_path=str(best_dir),
            log_path=str(out),
            deterministic=True,
            verbose=0,
        ),
    ]
    callback = CallbackList(callbacks)
    if options.progress:
        callback = CallbackList([callback, BoundedProgressBar()])
    start = time.perf_counter()
    model.learn(options.timesteps, callback=callback, tb_log_name=env_id)
    wall = time.perf_counter() - start
    best_path = best_dir / "best_model.zip"
    if best_path.exists():
        best_path.replace(path)
    else:
        model.save(path)
    if best_dir.exists() and not any(best_dir.iterdir()):
        best_dir.rmdir()
    print(f"{env_id}: trained {options.timesteps} steps in {wall:.0f} s; saved {path}", flush=True)
    return {
        "timesteps": options.timesteps,
        "seed": options.seed,
        "train_wall_time_s": round(wall, 1),
        "select_episodes": options.select_episodes,
        "eval_freq": options.eval_freq,
        "torch_threads": th.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {th.get_num_threads()} torch thread(s)",
    }


def evaluate_rewards(model: DQN, env_id: str, n_episodes: int, seed: int = EVAL_SEED) -> np.ndarray:
    """Rewards of ``n_episodes`` deterministic episodes (SB3 ``evaluate_policy``).

    :param model: the model
    :param env_id: Gymnasium id
    :param n_episodes: episodes
    :param seed: env seed of the first reset
    """
    rewards, _ = evaluate_policy(
        model, make_env(env_id, seed=seed), n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True
    )
    return np.asarray(rewards, dtype=float)


def train_and_evaluate(env_id: str, hyperparams: dict[str, Any], options: TrainOptions, command: str) -> dict[str, Any]:
    """Train (unless ``qat_only``), fine-tune for the chip, evaluate; write ``eval.json``.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, overrides already applied (:func:`with_overrides`)
    :param options: the training options
    :param command: the command line that reproduces the run (recorded in ``eval.json``)
    :return: the evaluation summary written to ``eval.json``
    """
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    trained_path = out / TRAINED_NAME
    if options.qat_only:
        previous = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else {}
        training = {key: previous.get(key) for key in TRAINING_KEYS + TRAINING_NOTES}
        training["command"] = previous.get("command") or "(training command not recorded)"
    else:
        training = train_model(env_id, hyperparams, options, trained_path)
        training["command"] = command

    model = DQN.load(trained_path, device="cpu")
    trained_rewards = evaluate_rewards(model, env_id, options.eval_episodes)
    qat: dict[str, Any] | None = None
    if options.qat_steps > 0:
        learning_rate = options.qat_learning_rate or qat_learning_rate(env_id)
        report = quantization_aware_finetune(
            model, "auto", options.qat_steps, env_id=env_id, learning_rate=learning_rate,
            check_episodes=QAT_CHECK_EPISODES,
            check_seed=QAT_CHECK_SEED, check_freq=QAT_CHECK_FREQ, seed=options.seed, progress_bar=options.progress,
        )
        snap_model_to_grid(model, report.grid)  # the trained network is the fake-quantized one
        qat = report.to_dict()
        if options.qat_only:
            qat["command"] = command
    model.save(out / "model.zip")
    rewards = evaluate_rewards(model, env_id, options.eval_episodes) if qat is not None else trained_rewards

    summary = {
        "env_id": env_id,
        **{key: training[key] for key in TRAINING_KEYS},
        **{key: training[key] for key in TRAINING_NOTES if training.get(key)},
        "eval_episodes": options.eval_episodes,
        "eval_seed": EVAL_SEED,
        "mean_reward": float(np.mean(rewards)),
        "std_reward": float(np.std(rewards)),
        "min_reward": float(np.min(rewards)),
        "trained_mean_reward": float(np.mean(trained_rewards)),
        "trained_std_reward": float(np.std(trained_rewards)),
        "qat": qat,
        "command": training["command"],
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{env_id}: mean reward {summary['mean_reward']:.1f} +- {summary['std_reward']:.1f} over "
        f"{options.eval_episodes} deterministic episodes (min {summary['min_reward']:.0f}; as trained, before QAT: "
        f"{summary['trained_mean_reward']:.1f}); saved {out / 'model.zip'}"
    )
    return summary
