"""What the ``spiking-dqn`` commands load: models, chip programs, environments, backend options."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import gymnasium as gym
from gymnasium import spaces
from stable_baselines3 import DQN

from envs.bounds import bounds_for_space
from spiking_dqn.cli.arguments import CLIError
from spiking_dqn.hardware import ChipProgram, ChipProgramError
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.recipes.manifest import RunFolderError, check_run_folder

#: The file ``spiking-dqn train`` writes next to ``model.zip``, with the env id.
EVAL_RECORD = "eval.json"


def infer_env_id(model_path: Path) -> str | None:
    """The env id of a model file, when its folder tells it; None otherwise.

    SB3 model files do not store the env id. It is read from the folder layout of shipped
    agents (``agents/trained/<env>/model.zip``) or from the ``eval.json`` that
    ``spiking-dqn train`` and the recipes write next to the model.

    :param model_path: the model file
    :raises CLIError: a training folder that does not hold one complete run (:func:`check_training_folder`)
    """
    parent = Path(model_path).resolve().parent
    check_training_folder(parent)
    if parent.parent.name == "trained" and parent.parent.parent.name == "agents":
        return parent.name
    record = parent / EVAL_RECORD
    if record.is_file():
        try:
            env_id = json.loads(record.read_text()).get("env_id")
        except (ValueError, AttributeError):
            return None
        return env_id if isinstance(env_id, str) else None
    return None


def require_env_id(env: str | None, model_path: Path) -> str:
    """``--env``, or the env id inferred from the model's folder.

    :param env: the ``--env`` option
    :param model_path: the model file
    :raises CLIError: no ``--env`` and no model file to infer it from (the missing file is
        the error then), or no env id
    """
    if env is None and not Path(model_path).is_file():
        raise CLIError(f"no model file at {model_path}")
    env_id = env or infer_env_id(model_path)
    if env_id is None:
        raise CLIError(
            "--env is required: SB3 model files do not store the environment id (it is inferred only for "
            f"shipped agents at agents/trained/<env>/model.zip and for models with an {EVAL_RECORD} next to them, "
            "as `spiking-dqn train` writes)"
        )
    return env_id


def load_spiking_model(path: Path, device: str = "cpu") -> DQN:
    """Load an SB3 DQN whose policy is a ``SpikingDQNPolicy``.

    :param path: the ``.zip`` file
    :param device: torch device of the loaded model
    :raises CLIError: missing file, a training folder that does not hold one complete run
        (:func:`check_training_folder`), not an SB3 DQN file, or not a spiking policy
    """
    if not Path(path).is_file():
        raise CLIError(f"no model file at {path}")
    check_training_folder(Path(path).resolve().parent)
    try:
        model = DQN.load(path, device=device)
    except Exception as exc:  # noqa: BLE001 - SB3 raises many kinds for foreign or damaged files
        raise CLIError(
            f"could not load {path} as a Stable-Baselines3 DQN model ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model.policy, SpikingDQNPolicy):
        raise CLIError(
            f"{path} is a DQN model with a {type(model.policy).__name__}, not a spiking_dqn.SpikingDQNPolicy: only "
            "spiking Q-networks (DQN(SpikingDQNPolicy, env)) can be deployed to the chip or compared with it"
        )
    return model


def check_training_folder(folder: Path) -> None:
    """Refuse to read a model or record from a training folder that does not hold one complete run.

    :func:`~spiking_dqn.recipes.manifest.check_run_folder`: a run that has not finished, or a file
    that is not the one its ``run.json`` records, is refused; a folder written before run
    manifests is read with a one-line warning.

    :param folder: the folder of the model file
    :raises CLIError: the reason, in one line
    """
    try:
        warning = check_run_folder(folder)
    except RunFolderError as exc:
        raise CLIError(str(exc)) from None
    if warning is not None:
        warnings.warn(warning, UserWarning, stacklevel=2)


def load_program(path: str | os.PathLike) -> ChipProgram:
    """Load a chip program file, with a user's error for a file that is not one.

    :param path: the ``.npz`` file
    :raises CLIError: missing file, or not a valid chip program
    """
    try:
        return ChipProgram.load(path)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except ChipProgramError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            # numpy's advice to load the file unsafely does not apply: it is no archive at all.
            raise CLIError(
                f"{path}: not a chip program file (not an .npz archive); chip programs are written by "
                "`spiking-dqn deploy` or ChipProgram.save"
            ) from None
        raise CLIError(str(exc)) from None


def backend_options(backend: str, eth_ip: str | None) -> dict[str, str]:
    """The keyword arguments of ``get_backend`` for ``--backend`` and ``--eth-ip``.

    :param backend: backend name
    :param eth_ip: the chip's address, only with ``spinnaker2``
    :raises CLIError: a chip without an address, or an address without a chip
    """
    if backend == "spinnaker2":
        if not eth_ip:
            raise CLIError("--backend spinnaker2 needs the chip's address: --eth-ip IP")
        return {"eth_ip": eth_ip}
    if eth_ip:
        raise CLIError("--eth-ip is only used with --backend spinnaker2")
    return {}


def check_env(env_id: str, obs_bound: list[float] | None = None) -> None:
    """Check that DQN with a spiking policy can train on ``env_id`` before training starts.

    :param env_id: Gymnasium id
    :param obs_bound: explicit encoder bounds (``--obs-bound``)
    :raises CLIError: unknown id, missing extra, a non-discrete action space, or an
        observation space the spike encoder cannot bound
    """
    try:
        env = gym.make(env_id)
    except gym.error.Error as exc:
        raise CLIError(f"cannot make environment {env_id!r}: {exc}") from None
    try:
        if not isinstance(env.action_space, spaces.Discrete):
            raise CLIError(
                f"{env_id} has a {type(env.action_space).__name__} action space ({env.action_space}); DQN needs a "
                "discrete action space (gymnasium.spaces.Discrete)"
            )
        try:
            bounds_for_space(env.observation_space, obs_bound)
        except ValueError as exc:
            raise CLIError(f"{env_id}: {exc} (with spiking-dqn train: --obs-bound B1,B2,...)") from None
    finally:
        env.close()
