"""What a training folder holds while a run writes it: checkpoints for ``--resume``, complete files only, one run.

* :class:`TrainingCheckpoint` saves, every ``every`` steps at the start of a rollout (where
  nothing of a step is half done), everything the rest of the run depends on in one file,
  :data:`CHECKPOINT_NAME`: the model (weights, optimizer, counters, last observation), the
  replay buffer, the training and evaluation envs (their state and random generators), the
  random states (Python, numpy, torch, the action space's, the policy's own generators), the
  callbacks' step counters and :class:`RecipeEvalCallback`'s best-so-far (its kept models too).
  :func:`restore_training` puts all of it back, so that the resumed run takes the same steps.
* :class:`RecipeEvalCallback` is SB3's ``EvalCallback`` whose ``evaluations.npz`` is written
  atomically and whose best models are kept in memory (and in the checkpoint) until training
  ends, when the recipe writes the best one (or the one :func:`~spiking_dqn.recipes.selection.reselect`
  keeps) as ``model_trained.zip``.
* :func:`move_previous_run`: a new run moves what an earlier run left in the folder aside, its
  manifest first (:mod:`spiking_dqn.recipes.manifest`).

Every file goes through :func:`spiking_dqn.files.atomic_write`.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from spiking_dqn.files import PARTIAL_MARK, atomic_write
from spiking_dqn.recipes.manifest import MANIFEST_NAME, begin_run, moved_aside, moving_to
from spiking_dqn.recipes.selection import Candidate, TopModels, model_bytes

#: The agent as trained (the best periodic evaluation's model, or the one ``--reselect`` keeps), before fine-tuning.
TRAINED_NAME = "model_trained.zip"
#: The training checkpoint in a run folder (deleted once training has finished).
CHECKPOINT_NAME = "checkpoint.pkl"
#: Files whose presence says that a folder holds a run (moved aside last, see :func:`move_previous_run`).
RUN_MARKERS = ("model.zip", "model_trained.zip", "eval.json", CHECKPOINT_NAME)
#: How the folders that hold earlier runs start (``previous-<UTC time>``).
PREVIOUS_PREFIX = "previous-"
#: Version of the checkpoint's layout.
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or made with other settings than the resumed run's."""


class RecipeEvalCallback(EvalCallback):
    """SB3's ``EvalCallback``: ``out/evaluations.npz`` written atomically, the best models kept in memory.

    :param eval_env: the env of the periodic evaluations
    :param out: the run folder
    :param keep: how many of the best evaluations' models to keep (:class:`~spiking_dqn.recipes.selection.TopModels`)
    :param kwargs: ``EvalCallback``'s other arguments (no paths)
    """

    def __init__(self, eval_env: Any, out: Path, keep: int = 1, **kwargs: Any) -> None:
        self.keeper = TopModels(keep)
        super().__init__(eval_env, callback_after_eval=self.keeper, log_path=str(out), **kwargs)
        self.evaluations_file = Path(out) / "evaluations.npz"

    @property
    def best(self) -> bytes | None:
        """The best evaluated model as SB3 saves it (None before the first evaluation)."""
        return self.keeper.best

    @property
    def candidates(self) -> list[Candidate]:
        """The kept models, best evaluation first."""
        return self.keeper.candidates

    def _on_step(self) -> bool:
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return super()._on_step()
        with atomic_write(self.evaluations_file) as tmp:
            self.log_path = str(tmp.with_suffix(""))  # np.savez adds the .npz
            return super()._on_step()

    def state(self) -> dict[str, Any]:
        """The kept models and the evaluation log, for a checkpoint."""
        names = ("best_mean_reward", "last_mean_reward", "evaluations_results", "evaluations_timesteps",
                 "evaluations_length", "evaluations_successes")
        return {"candidates": self.candidates, "eval_env": self.eval_env,
                **{name: getattr(self, name) for name in names}}

    def restore(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state` returned (from a checkpoint that kept one model: that model)."""
        state = dict(state)
        best = state.pop("best", None)  # checkpoints written before TopModels kept the best model alone
        self.keeper.candidates = state.pop("candidates", None) or (
            [Candidate(-1, float(state["best_mean_reward"]), best)] if best is not None else [])
        for name, value in state.items():
            setattr(self, name, value)


class TrainingCheckpoint(BaseCallback):
    """Save a :data:`CHECKPOINT_NAME` every ``every`` steps, at the start of a rollout.

    :param path: the checkpoint file
    :param every: environment steps between checkpoints (0: none)
    :param callbacks: the run's other callbacks, whose step counters a checkpoint keeps
    :param evaluation: the run's evaluation callback (its best-so-far is kept)
    :param record: what the checkpoint records about the run (``fingerprint``, ``command``,
        ``total_timesteps``, ``resumed_at``, ``wall_time_s`` of the earlier segments)
    """

    def __init__(self, path: Path, every: int, callbacks: list[BaseCallback], evaluation: RecipeEvalCallback,
                 record: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.every, self.callbacks, self.evaluation = Path(path), every, callbacks, evaluation
        self.record = dict(record)
        self.last_saved: int | None = None
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Training wall time of this run, the earlier segments of a resumed run included."""
        return self.record.get("wall_time_s", 0.0) + time.perf_counter() - self.started

    def _on_training_start(self) -> None:
        self.last_saved = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        steps = self.model.num_timesteps
        if self.every > 0 and self.last_saved is not None and steps - self.last_saved >= self.every:
            try:
                self.save()
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an env or space pickle cannot take
                warnings.warn(f"training checkpoints are off for this run (--resume will not be possible): "
                              f"its state cannot be pickled: {exc}", RuntimeWarning, stacklevel=2)
                self.every = 0
            self.last_saved = steps

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        """Write the checkpoint of the model now (atomically)."""
        model = self.model
        state = {
            **self.record,
            "format": CHECKPOINT_FORMAT,
            "num_timesteps": model.num_timesteps,
            "wall_time_s": self.elapsed(),
            "model": model_bytes(model),
            "replay_buffer": model.replay_buffer,
            "env": model.get_env(),
            "evaluation": self.evaluation.state(),
            "n_calls": [callback.n_calls for callback in self.callbacks],
            "random": random_states(model),
        }
        with atomic_write(self.path) as tmp, open(tmp, "wb") as f:
            cloudpickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state a :class:`TrainingCheckpoint` saved.

    :raises CheckpointError: no such file, or one this version cannot read
    """
    if not path.is_file():
        raise CheckpointError(f"--resume: there is no training checkpoint {path}")
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    except Exception as exc:  # a checkpoint is only ever written whole; this is another file
        raise CheckpointError(f"--resume: cannot read the training checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"--resume: {path} is not a training checkpoint of this version")
    return state


def check_fingerprint(state: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint made with other settings than ``fingerprint``.

    :raises CheckpointError: the settings that differ, as saved and as given
    """
    saved = json.loads(json.dumps(state["fingerprint"], default=str))
    given = json.loads(json.dumps(fingerprint, default=str))
    differ = [f"{key}: {saved.get(key)!r} in the checkpoint, {given.get(key)!r} now"
              for key in sorted(set(saved) | set(given)) if saved.get(key) != given.get(key)]
    if differ:
        raise CheckpointError(f"--resume: {path} was made with other settings ({'; '.join(differ)}); "
                              "resume with the command of the interrupted run")


def load_checkpoint_model(state: dict[str, Any], model_class: type[DQN], **kwargs: Any) -> DQN:
    """The model of a checkpoint, with its training env and replay buffer (random states: :func:`restore_training`).

    :param state: what :func:`read_checkpoint` returned
    :param model_class: the model's class
    :param kwargs: passed to ``model_class.load`` (``tensorboard_log``)
    """
    model = model_class.load(io.BytesIO(state["model"]), device="cpu", **kwargs)
    model.set_env(state["env"], force_reset=False)
    model.replay_buffer = state["replay_buffer"]
    return model


def restore_training(model: DQN, state: dict[str, Any], checkpoint: TrainingCheckpoint) -> None:
    """Put a checkpoint's callbacks and random states back, just before ``model.learn`` resumes.

    :param model: the model of :func:`load_checkpoint_model`
    :param state: what :func:`read_checkpoint` returned
    :param checkpoint: the resumed run's checkpoint callback (with its other callbacks)
    """
    checkpoint.evaluation.restore(state["evaluation"])
    for callback, n_calls in zip(checkpoint.callbacks, state["n_calls"], strict=True):
        callback.n_calls = n_calls
    checkpoint.record["wall_time_s"] = state["wall_time_s"]
    checkpoint.record["resumed_at"] = [*state.get("resumed_at", []), state["num_timesteps"]]
    set_random_states(model, state["random"])


def random_states(model: DQN) -> dict[str, Any]:
    """The random states a run's next steps draw from: Python's, numpy's, torch's, the action space's, the policy's."""
    generators = {}
    for name, module in model.policy.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, th.Generator):
                generators[(name, attribute)] = value.get_state()
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state(),
            "action_space": model.action_space.np_random.bit_generator.state, "policy": generators}


def set_random_states(model: DQN, states: dict[str, Any]) -> None:
    """Put back what :func:`random_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    th.set_rng_state(states["torch"])
    model.action_space.np_random.bit_generator.state = states["action_space"]
    modules = dict(model.policy.named_modules())
    for (name, attribute), generator_state in states["policy"].items():
        generator = th.Generator()
        generator.set_state(generator_state)
        setattr(modules[name], attribute, generator)


def move_previous_run(out: Path, keep: tuple[str, ...] = ()) -> str | None:
    """Move what an earlier run left in ``out`` into ``out/previous-<UTC time>/``, but ``keep``.

    A folder holds a run when it has one of :data:`RUN_MARKERS`; everything in it then came from
    that run or from its model (chip programs, reports, NIR files, cards), so everything but
    ``keep`` and earlier ``previous-*`` folders moves, the markers last (a run killed while moving
    leaves a marker, and the next run moves the rest). Half-written temporary files are removed.
    Before anything moves, the folder's manifest is copied to the new folder and replaced by one
    that says the new run has not finished (:func:`~spiking_dqn.recipes.manifest.begin_run`);
    after a kill while moving, the next run moves the rest into the same folder.

    :param out: the run folder
    :param keep: names that stay (what ``--qat-only`` reuses)
    :return: what was done, in one line (None: nothing to move)
    """
    for partial in out.glob(f".*{PARTIAL_MARK}*"):
        partial.unlink(missing_ok=True)
    if not any((out / name).exists() for name in RUN_MARKERS if name not in keep):
        begin_run(out)
        return None
    target = moving_to(out) or _previous_folder(out)
    begin_run(out, previous=target)
    entries = [p for p in out.iterdir() if p.name not in keep and p.name != MANIFEST_NAME
               and not p.name.startswith(PREVIOUS_PREFIX)]
    entries.sort(key=lambda p: p.name in RUN_MARKERS)
    for entry in entries:
        entry.rename(target / entry.name)
    moved_aside(out)
    names = ", ".join(p.name for p in entries[:6]) + (", ..." if len(entries) > 6 else "")
    return f"{out} held an earlier run: moved its {len(entries)} file(s) ({names}) to {target}"


def _previous_folder(out: Path) -> Path:
    """A new ``out/previous-<UTC time>/`` folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out / f"{PREVIOUS_PREFIX}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = out / f"{PREVIOUS_PREFIX}{stamp}-{n}"
    target.mkdir()
    return target


def resume_hint(options: Any, command: str) -> str:
    """What an interrupted run left in ``out`` and the command that continues it, in one line.

    :param options: the interrupted run's :class:`~spiking_dqn.recipes.recipe.TrainOptions` (its ``out``,
        ``timesteps`` and ``checkpoint_freq``)
    :param command: its command line
    """
    out = options.out
    words = [word for word in shlex.split(command) if word not in ("--resume", "--qat-only")]
    if (out / CHECKPOINT_NAME).exists():
        try:
            step = f" at step {read_checkpoint(out / CHECKPOINT_NAME)['num_timesteps']} of {options.timesteps}"
        except CheckpointError:
            step = ""
        return f"the training checkpoint{step} is {out / CHECKPOINT_NAME}: resume with: {shlex.join(words)} --resume"
    if (out / TRAINED_NAME).exists():
        return f"training had finished ({out / TRAINED_NAME}): finish with: {shlex.join(words)} --qat-only"
    return (f"no training checkpoint yet (one every {options.checkpoint_freq} steps): run the same command again "
            "to start over")
