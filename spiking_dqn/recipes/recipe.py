"""The one ``model.learn()`` loop the recipes share (``spiking-dqn train``, ``demo``, ``agents/``).

1. :func:`make_model`: the training env and a ``SpikingDQN`` with ``SpikingDQNPolicy``.
2. :func:`learn`: ``model.learn()`` with a :class:`~spiking_dqn.SpikeActivityLogger` and SB3's
   ``EvalCallback``, whose best periodic evaluation is kept as ``model_trained.zip``
   (:func:`load_trained` reloads it and evaluates it), and a checkpoint every
   ``checkpoint_freq`` steps from which ``resume`` continues an interrupted run
   (:mod:`spiking_dqn.recipes.run_folder`).
3. :func:`fit_for_chip`: fine-tuning for the chip (``qat_steps`` of ``qat_mode``, 0 to skip)
   through :func:`~spiking_dqn.pipeline.fit_to_chip` on the int8 grid of ``lam="auto"``:
   distillation by default, the weights that did best on the emulator kept and snapped to
   the grid, and never a program worse than the plain post-training one on the held-out
   episodes. ``model.zip`` is then the float twin of the chip program that
   ``HardwarePolicy.from_model`` builds from it.
4. :func:`record_evaluation`: ``model.zip`` (and the agent as trained) over ``eval_episodes``
   deterministic episodes, written to ``eval.json``.

:func:`train_and_evaluate` runs them in this order (``spiking-dqn train`` and ``demo``);
``agents/cartpole.py`` and ``agents/acrobot.py`` call them one by one. Every file is written
atomically (:mod:`spiking_dqn.files`), and a new run first moves an earlier run's files aside.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env, make_vec
from spiking_dqn.callbacks import SpikeActivityLogger
from spiking_dqn.config import SpikingConfig
from spiking_dqn.dqn import SpikingDQN
from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.pipeline import ROBUST_QAT, CalibrationSettings, QATSettings, Seeds, fit_to_chip
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.qat import MODES
from spiking_dqn.recipes.hyperparams import qat_learning_rate
from spiking_dqn.recipes.manifest import begin_run
from spiking_dqn.recipes.run_folder import (
    CHECKPOINT_NAME,
    TRAINED_NAME,
    RecipeEvalCallback,
    TrainingCheckpoint,
    check_fingerprint,
    load_checkpoint_model,
    move_previous_run,
    read_checkpoint,
    restore_training,
)
from spiking_dqn.recipes.selection import reselect
from spiking_dqn.recipes.versions import installed_versions, machine_line
from spiking_dqn.semantics.checks import check_field_ranges
from spiking_dqn.thresholds import ThresholdNoise

#: The policy_kwargs keys that are spiking options (checked by ``SpikingConfig``).
SPIKING_OPTIONS = frozenset(f.name for f in dataclasses.fields(SpikingConfig))
#: Seeds of the final evaluation and of the QAT reward checks (apart from the training seeds).
EVAL_SEED = 12345
QAT_CHECK_SEED = 50_000
#: Episodes of each QAT reward check of the recipes (and of the demo's and ``agents.deploy``'s
#: QAT, which redo theirs): twice a fit's default (``QATSettings.check_episodes``), because the
#: recipes' keep-best choice ships an agent. The shipped agents were fine-tuned with it.
QAT_CHECK_EPISODES = 20
#: QAT steps between those checks (the fine-tuned weights kept are the best checked ones).
QAT_CHECK_FREQ = 1000
#: The calibration of the guard's ``"ptq"`` program: per layer, thresholds the float neurons can hold (model.zip's).
GUARD_CALIBRATION = CalibrationSettings(granularity="layer")
#: Env-seed offset of the periodic evaluations that pick the best model.
SELECT_SEED_OFFSET = 1000
#: What ``eval.json`` keeps from training when ``qat_only`` rewrites it.
TRAINING_KEYS = ("timesteps", "seed", "train_wall_time_s", "select_episodes", "eval_freq", "torch_threads", "machine")
#: Notes about the training run added to ``eval.json`` later (a re-measured wall time), kept
#: too when ``qat_only`` rewrites it; a new training run starts without them.
TRAINING_NOTES = ("train_wall_time_remeasured", "resumed_at", "reselection")
#: What ``qat_only`` reuses from the run folder (the rest, derived from the old ``model.zip``, moves aside).
#: The training record, written when training ends (``qat_only`` reads it when ``eval.json`` was never written).
TRAINING_RECORD = "training.json"
TRAINING_FILES = (TRAINED_NAME, "eval.json", "evaluations.npz", TRAINING_RECORD)


@dataclass(kw_only=True)
class TrainOptions:
    """How to train, fine-tune and evaluate: the options of ``spiking-dqn train`` and of the recipes.

    Each field's ``metadata["help"]`` is its documentation and its command-line help
    (:func:`spiking_dqn.cli.arguments.add_options`); ``None`` of an override keeps the hyperparameters'.
    """

    timesteps: int = field(metadata={"help": "environment steps to train for", "range": "positive"})
    seed: int = field(default=0, metadata={"help": "random seed (training, best-model selection, QAT)"})
    out: Path = field(metadata={"help": "output folder (model.zip, model_trained.zip, eval.json, README.md)"})
    tensorboard_log: str | None = field(default=None, metadata={"help": "TensorBoard log folder"})
    eval_freq: int = field(default=2500, metadata={
        "help": "steps between the periodic evaluations that pick the best model", "range": "positive"})
    eval_episodes: int = field(default=100, metadata={"help": "episodes of the final evaluation", "range": "positive"})
    select_episodes: int = field(default=50, metadata={
        "help": "episodes of each periodic evaluation that picks the best model", "range": "positive"})
    reselect: int = field(default=1, metadata={"help": "keep the models of the RESELECT best periodic evaluations, "
        "play each on the same --eval-episodes fresh episodes and keep the best there (1: the best evaluation's "
        "model, as SB3's EvalCallback keeps)", "range": "positive"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bar"})
    qat_steps: int = field(default=ROBUST_QAT.steps, metadata={
        "help": "fine-tuning steps for the int8 chip after training (0: none): distillation gradient steps, or "
        "environment steps of online QAT (the shipped agents: --qat-mode online --qat-steps 10000); model.zip is "
        "then the float twin of the chip program, never worse on the held-out episodes than plain quantization",
        "range": "non_negative"})
    qat_mode: str = field(default=ROBUST_QAT.mode, metadata={
        "help": "distill: the quantized network learns the float agent's Q-values and actions; online or replay: "
        "DQN's TD updates (the QAT the shipped agents were fine-tuned with)", "choices": MODES})
    qat_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the fine-tuning (default: online and replay, the env's entry of QAT_LEARNING_RATES "
        "in spiking_dqn/recipes/hyperparams.py, else the training's final one; distill, the training's final one; a "
        "tenth of the first where the training's schedule ends at 0, as rl-zoo's lin_<value> does)",
        "range": "positive"})
    qat_only: bool = field(default=False, metadata={
        "help": "skip training: fine-tune the agent as trained (model_trained.zip in --out)"})
    resume: bool = field(default=False, metadata={
        "help": f"continue the interrupted training in --out from its checkpoint ({CHECKPOINT_NAME}) to the same "
        "total --timesteps (give the interrupted run's other options too)"})
    checkpoint_freq: int = field(default=10_000, metadata={
        "help": f"steps between the training checkpoints that --resume continues from ({CHECKPOINT_NAME}: model, "
        "replay buffer, random states; 0: none)", "range": "non_negative"})
    net_arch: list[int] | None = field(default=None, metadata={
        "help": "override the hidden layer sizes, e.g. 128,128", "range": "positive"})
    ticks: int | None = field(default=None, metadata={"help": "override the ticks per inference", "range": "positive"})
    obs_bound: list[float] | None = field(default=None, metadata={
        "help": "override the encoder bounds, one per observation dimension, e.g. 1,1,1,1,6,12", "range": "positive"})
    threshold_noise: str | None = field(default=None, metadata={
        "help": "ASPEN stochastic thresholds in training: LOW,HIGH for U(LOW, HIGH), or levels:A,B,C for "
        "discrete factors, e.g. 1.0,1.5"})
    activity_penalty: float | None = field(default=None, metadata={
        "help": "coefficient of the activity penalty (mean synaptic events per inference) added to the loss"})
    encoding: Literal["deterministic", "poisson", "hybrid"] | None = field(default=None, metadata={
        "help": "input spike encoding (hybrid: thresholds lowered with the input, NeuEdge)"})
    encoding_alpha: float | None = field(default=None, metadata={
        "help": "hybrid coding's threshold slope alpha in [0, 1): input thresholds 1 - alpha * rate"})

    def check(self) -> None:
        """Refuse, before any training, options the run would fail on.

        :raises ValueError: a count or rate out of its field's range (e.g. ``reselect=0``),
            ``qat_only`` without the agent as trained in ``out``, ``resume`` without a
            checkpoint there, or an override the spiking options refuse (e.g. ``threshold_noise="1.5,1.0"``)
        """
        check_field_ranges(self)
        out = Path(self.out)
        interrupted = (out / CHECKPOINT_NAME).exists()
        if self.qat_only and self.resume:
            raise ValueError("--resume continues the training, --qat-only skips it: give one of them")
        if self.qat_only and not (out / TRAINED_NAME).exists():
            how = " (its training was interrupted: run its command with --resume first)" if interrupted else ""
            raise ValueError(f"--qat-only needs the agent as trained: {out / TRAINED_NAME} does not exist{how}")
        if self.resume and not interrupted:
            done = f" (its training has finished: {TRAINED_NAME} is there; --qat-only redoes the fine-tuning)" if (
                out / TRAINED_NAME).exists() else ""
            raise ValueError(f"--resume: there is no training checkpoint {out / CHECKPOINT_NAME}{done}")
        with_overrides({}, self)


class BoundedProgressBar(ProgressBarCallback):
    """SB3's progress bar, stopped at the requested total.

    ``learn`` collects whole rollouts of ``train_freq`` steps, so the last one may run past
    ``total_timesteps``; the bar counts only up to it.
    """

    def _on_step(self) -> bool:
        remaining = max(int(self.pbar.total) - int(self.pbar.n), 0)
        self.pbar.update(min(self.training_env.num_envs, remaining))
        return True


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


def make_model(env_id: str, hyperparams: dict[str, Any], options: TrainOptions) -> SpikingDQN | None:
    """Step 1: the training env (seed ``seed``) and the ``SpikingDQN`` to train on it (None with ``qat_only``).

    A new run first marks ``out`` as holding an unfinished run and moves what an earlier run left
    there aside (:func:`move_previous_run`; ``qat_only`` keeps the training's files, ``resume``
    everything); ``resume`` loads the model, env and replay buffer of the checkpoint.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included (overrides applied)
    :param options: the training options
    :raises CheckpointError: ``resume`` with a checkpoint of other settings
    """
    options.out.mkdir(parents=True, exist_ok=True)
    if not options.resume:
        moved = move_previous_run(options.out, keep=TRAINING_FILES if options.qat_only else ())
        if moved:
            print(moved, flush=True)
    if options.qat_only:
        return None
    if options.resume:
        state = read_checkpoint(options.out / CHECKPOINT_NAME)
        check_fingerprint(state, run_fingerprint(env_id, hyperparams, options), options.out / CHECKPOINT_NAME)
        begin_run(options.out, resume=True)
        print(f"{env_id}: resuming from the checkpoint at step {state['num_timesteps']} of {options.timesteps} "
              f"({options.out / CHECKPOINT_NAME})", flush=True)
        return load_checkpoint_model(state, SpikingDQN, tensorboard_log=options.tensorboard_log)
    env = make_vec(env_id, n_envs=1, seed=options.seed)
    return SpikingDQN(SpikingDQNPolicy, env, seed=options.seed, tensorboard_log=options.tensorboard_log, verbose=0,
                      **hyperparams)


def run_fingerprint(env_id: str, hyperparams: dict[str, Any], options: TrainOptions) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (recorded in its checkpoint)."""
    return {"env_id": env_id, "hyperparams": hyperparams, "timesteps": options.timesteps, "seed": options.seed,
            "eval_freq": options.eval_freq, "select_episodes": options.select_episodes,
            **({"reselect": options.reselect} if options.reselect != 1 else {})}


def learn(model: SpikingDQN | None, env_id: str, options: TrainOptions, command: str,
          hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Step 2: ``model.learn()`` with SB3's ``EvalCallback``, the best evaluation kept as ``out/model_trained.zip``.

    With ``reselect`` above 1, the models of that many best evaluations are played again on the
    same fresh episodes and the best there is kept (:mod:`spiking_dqn.recipes.selection`).

    Every ``checkpoint_freq`` steps a checkpoint (``out/checkpoint.pkl``) keeps what ``resume``
    needs to take the same steps as an uninterrupted run; it is deleted when training ends.
    With ``qat_only`` (no model) nothing is trained and the training record is read back
    from ``out/eval.json``.

    :param model: the model of :func:`make_model`
    :param env_id: Gymnasium id
    :param options: the training options
    :param command: the command line of the run
    :param hyperparams: what the model was made with (recorded in the checkpoint, checked by ``resume``)
    :return: the training record (timesteps, seed, wall time, selection, machine, command)
    """
    out = options.out
    if model is None:
        source = next((out / name for name in ("eval.json", TRAINING_RECORD) if (out / name).exists()), None)
        previous = json.loads(source.read_text()) if source is not None else {}
        training = {key: previous.get(key) for key in TRAINING_KEYS + TRAINING_NOTES}
        training["command"] = previous.get("command") or "(training command not recorded)"
        return training
    evaluation = RecipeEvalCallback(
        make_vec(env_id, n_envs=1, seed=options.seed + SELECT_SEED_OFFSET), out,
        keep=options.reselect, n_eval_episodes=options.select_episodes, eval_freq=options.eval_freq,
        deterministic=True, verbose=0)
    callbacks = [SpikeActivityLogger(log_freq=1000), evaluation]
    fingerprint = run_fingerprint(env_id, hyperparams, options)
    checkpoint = TrainingCheckpoint(out / CHECKPOINT_NAME, options.checkpoint_freq, callbacks, evaluation, {
        "fingerprint": fingerprint, "command": command, "total_timesteps": options.timesteps})
    if options.resume:
        restore_training(model, read_checkpoint(out / CHECKPOINT_NAME), checkpoint)
    callback = CallbackList([*callbacks, checkpoint])
    if options.progress:
        callback = CallbackList([callback, BoundedProgressBar()])
    model.learn(options.timesteps - model.num_timesteps, callback=callback, tb_log_name=env_id,
                reset_num_timesteps=not options.resume)
    wall = checkpoint.elapsed()
    kept, reselection = evaluation.best, None
    if len(evaluation.candidates) > 1:
        chosen, reselection = reselect(evaluation.candidates, env_id, options.eval_episodes, progress=options.progress)
        kept = chosen.model
    path = out / TRAINED_NAME
    with atomic_write(path) as tmp:
        if kept is not None:
            tmp.write_bytes(kept)
        else:
            model.save(tmp)
    print(f"{env_id}: trained {options.timesteps} steps in {wall:.0f} s; saved {path}", flush=True)
    record = {
        "command": command,
        "timesteps": options.timesteps,
        "seed": options.seed,
        "train_wall_time_s": round(wall, 1),
        "select_episodes": options.select_episodes,
        "eval_freq": options.eval_freq,
        "torch_threads": th.get_num_threads(),
        "machine": machine_line(),
        "packages": installed_versions(),
        **({"resumed_at": checkpoint.record["resumed_at"]} if checkpoint.record.get("resumed_at") else {}),
        **({"reselection": reselection} if reselection else {}),
    }
    atomic_write_text(out / TRAINING_RECORD, json.dumps(record, indent=2) + "\n")
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    return record


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
    """The recipe: make the model, learn (unless ``qat_only``), fit to the chip (QAT), evaluate; write ``eval.json``.

    The steps, in this order, are those ``agents/cartpole.py`` shows one by one.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, overrides already applied (:func:`with_overrides`)
    :param options: the training options
    :param command: the command line that reproduces the run (recorded in ``eval.json``)
    :return: the evaluation summary written to ``eval.json``
    """
    model = make_model(env_id, hyperparams, options)
    training = learn(model, env_id, options, command, hyperparams)
    model, trained_rewards = load_trained(env_id, options)
    qat = fit_for_chip(model, env_id, options, command)
    return record_evaluation(model, env_id, options, training, trained_rewards, qat)


def load_trained(env_id: str, options: TrainOptions) -> tuple[DQN, np.ndarray]:
    """The agent as trained (``out/model_trained.zip``) and its rewards over ``eval_episodes``.

    :param env_id: Gymnasium id
    :param options: the training options
    """
    model = DQN.load(options.out / TRAINED_NAME, device="cpu")
    return model, evaluate_rewards(model, env_id, options.eval_episodes)


def fit_for_chip(model: DQN, env_id: str, options: TrainOptions, command: str) -> dict[str, Any] | None:
    """Step 3: fine-tune for the int8 grid of ``lam="auto"`` (:func:`~spiking_dqn.pipeline.fit_to_chip`); model.zip.

    ``qat_steps`` of ``qat_mode`` (keep-best on ``QAT_CHECK_EPISODES`` check episodes every
    ``QAT_CHECK_FREQ`` steps, snapped to the grid), guarded by the plain post-training
    programs: of all, the fit keeps the best on ``eval_episodes`` held-out episodes from
    ``EVAL_SEED`` (the final evaluation's), with the weights before fine-tuning when a
    post-training program wins. Prints the float and chip rewards and their gap on them.
    ``model.zip`` carries the chosen program's grid and thresholds (:data:`GUARD_CALIBRATION`):
    ``spiking-dqn deploy`` (``lam=None``) rebuilds that program.

    :param model: the agent as trained (changed in place)
    :param env_id: Gymnasium id
    :param options: the training options
    :param command: the command line of the run (recorded with ``qat_only``)
    :return: the QAT report as plain data, the fit's figures under ``"fit"`` (None without QAT)
    """
    qat: dict[str, Any] | None = None
    if options.qat_steps > 0:
        table_rate = qat_learning_rate(env_id) if options.qat_mode != "distill" else None
        settings = QATSettings(options.qat_steps, mode=options.qat_mode, check_episodes=QAT_CHECK_EPISODES,
                               learning_rate=options.qat_learning_rate or table_rate, check_freq=QAT_CHECK_FREQ)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the gap's warning is the line printed below
            fit = fit_to_chip(model, env_id, lam="auto", qat=settings, method="none", progress=options.progress,
                              seeds=Seeds(search=options.seed, qat_checks=QAT_CHECK_SEED, evaluation=EVAL_SEED),
                              eval_episodes=options.eval_episodes, calibration=GUARD_CALIBRATION)
        print(f"{env_id}: fit to the chip: {fit.gap_line()}", flush=True)
        qat = {**fit.qat.to_dict(), "fit": fit.gap_record()}
        if options.qat_only:
            qat["command"] = command
    with atomic_write(options.out / "model.zip") as tmp:
        model.save(tmp)
    return qat


def record_evaluation(
    model: DQN,
    env_id: str,
    options: TrainOptions,
    training: dict[str, Any],
    trained_rewards: np.ndarray,
    qat: dict[str, Any] | None,
) -> dict[str, Any]:
    """Step 4: evaluate ``model.zip`` (after QAT; else the rewards as trained), write and print ``eval.json``.

    :param model: the fitted model
    :param env_id: Gymnasium id
    :param options: the training options
    :param training: the record of :func:`learn`
    :param trained_rewards: the rewards of the agent as trained
    :param qat: the QAT record of :func:`fit_for_chip`
    :return: the evaluation summary written to ``eval.json``
    """
    out = options.out
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
        "packages": installed_versions(),
    }
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=2) + "\n")
    before = f"; as trained, before QAT: {summary['trained_mean_reward']:.1f}" if qat is not None else ""
    print(
        f"{env_id}: mean reward {summary['mean_reward']:.1f} +- {summary['std_reward']:.1f} over "
        f"{options.eval_episodes} deterministic episodes from env seed {EVAL_SEED} (min {summary['min_reward']:.0f}"
        f"{before}); saved {out / 'model.zip'}"
    )
    return summary
