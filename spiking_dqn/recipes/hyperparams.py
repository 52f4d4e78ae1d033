"""Training hyperparameters: the rl-zoo file ``zoo_configs/dqn.yml``, read as SB3 ``DQN`` keyword arguments.

The file is the one source of the recipes' hyperparameters: ``agents/cartpole.py``,
``agents/acrobot.py``, ``spiking-dqn train`` and ``python -m rl_zoo3.train -conf
zoo_configs/dqn.yml`` all read it. It ships inside the wheel (package ``zoo_configs``) and
is read with :mod:`importlib.resources`, so an installed package finds it too.

An environment without an entry gets :data:`DEFAULT_HYPERPARAMS` and
:data:`DEFAULT_TIMESTEPS`. Every reader takes ``path``: another file of the same form instead
(``spiking-dqn tune --export FILE`` writes one; ``spiking-dqn train ENV --hyperparams FILE``
trains its entry).
"""

from __future__ import annotations

import ast
import copy
import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import DQN

from spiking_dqn.dqn import learning_rate_schedule


class HyperparamsFileError(ValueError):
    """A hyperparameter file given by the user cannot be used (unreadable, no entry for the env, a bad entry)."""


#: The package and file that hold the rl-zoo hyperparameters.
ZOO_PACKAGE = "zoo_configs"
ZOO_FILE = "dqn.yml"
#: The policy every entry must name.
SPIKING_POLICY = "spiking_dqn.SpikingDQNPolicy"
#: ``DQN`` keyword arguments of an environment the file has no entry for: SB3's ``DQN``
#: defaults with a smaller replay buffer, a shorter warm-up and a faster target update,
#: and a 64-64 spiking network with 16 ticks per inference.
DEFAULT_HYPERPARAMS: dict[str, Any] = dict(
    learning_rate=5e-4,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=250,
    train_freq=4,
    gradient_steps=1,
    exploration_fraction=0.1,
    exploration_final_eps=0.05,
    policy_kwargs=dict(net_arch=[64, 64], ticks=16),
)
#: Training steps of an environment the file has no entry for.
DEFAULT_TIMESTEPS = 100_000
#: Learning rate of the recipes' quantization-aware fine-tuning, where it is not the
#: training's final one (rl-zoo files have no place for it). CartPole at 10 ticks: with
#: the training's 5e-4, QAT of the seed-5 agent reached 130 on the chip (10,000 steps) and
#: 169 (20,000); with 1e-4 it reached 200 (measured here, 100 held-out episodes).
QAT_LEARNING_RATES: dict[str, float] = {"CartPole-v0": 1e-4, "CartPole-v1": 1e-4}


def qat_learning_rate(env_id: str) -> float | None:
    """The recipes' QAT learning rate for ``env_id`` (None: the training's final one).

    :param env_id: Gymnasium id
    """
    return QAT_LEARNING_RATES.get(env_id)


def zoo_entries(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The raw entries of ``zoo_configs/dqn.yml`` (or of the file ``path``), by env id (``policy_kwargs`` still a string).

    :param path: an rl-zoo style file instead of the packaged one
    :raises HyperparamsFileError: ``path`` cannot be read, is not YAML, or is not a mapping of entries
    """
    if path is None:
        return yaml.safe_load(resources.files(ZOO_PACKAGE).joinpath(ZOO_FILE).read_text(encoding="utf-8"))
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise HyperparamsFileError(f"cannot read hyperparameter file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise HyperparamsFileError(f"{path} is not an rl-zoo hyperparameter file (a mapping of env ids to entries)")
    return entries


def _name(path: str | Path | None) -> str:
    return f"{ZOO_PACKAGE}/{ZOO_FILE}" if path is None else str(path)


def parse_policy_kwargs(text: str) -> dict[str, Any]:
    """The ``policy_kwargs`` of an rl-zoo entry, ``"dict(net_arch=[64, 64], ticks=16)"``, as a dict.

    rl-zoo evaluates the string; this reads it without evaluating anything: a ``dict(...)``
    call with keyword arguments or a ``{...}`` literal, whose values are Python literals.

    :param text: the entry's ``policy_kwargs`` string
    :raises ValueError: anything else (names, calls, operators)
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"policy_kwargs {text!r} is not a Python expression ({exc.msg})") from None
    try:
        if isinstance(node, ast.Dict):
            value = ast.literal_eval(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            if node.args:
                raise ValueError("positional arguments")
            if any(kw.arg is None for kw in node.keywords):
                raise ValueError("**unpacking")
            value = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        else:
            raise ValueError("not a dict")
    except ValueError:
        raise ValueError(
            f"policy_kwargs {text!r} must be dict(key=literal, ...) or a {{...}} literal of plain values"
        ) from None
    return value


def _entry(env_id: str, entries: dict[str, dict[str, Any]], name: str) -> tuple[dict[str, Any], int | None]:
    """The ``DQN`` keyword arguments and the ``n_timesteps`` (None: absent) of ``env_id``'s entry in ``entries``.

    :param env_id: Gymnasium id
    :param entries: what :func:`zoo_entries` read
    :param name: the file's name, for the errors
    :raises KeyError: no entry for ``env_id``
    :raises ValueError: the entry names another policy or its ``policy_kwargs`` cannot be read
    """
    if env_id not in entries:
        raise KeyError(f"{name} has no entry for {env_id!r}; entries: {', '.join(map(str, entries))}")
    entry = dict(entries[env_id])
    policy = entry.pop("policy", SPIKING_POLICY)
    if policy != SPIKING_POLICY:
        raise ValueError(f"{name} entry {env_id!r}: policy must be {SPIKING_POLICY!r}, got {policy!r}")
    timesteps = entry.pop("n_timesteps", None)
    # rl-zoo's lin_<value>: checked here, kept as written, made a schedule by SpikingDQN
    if isinstance(entry.get("learning_rate"), str):
        try:
            learning_rate_schedule(entry["learning_rate"])
        except ValueError as exc:
            raise ValueError(f"{name} entry {env_id!r}: {exc}") from None
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = parse_policy_kwargs(entry["policy_kwargs"])
    return entry, None if timesteps is None else int(timesteps)


def _timesteps(env_id: str, timesteps: int | None, name: str) -> int:
    if timesteps is None:
        raise KeyError(f"{name}: the {env_id} entry has no n_timesteps")
    return timesteps


def load_hyperparams(env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """The ``DQN`` keyword arguments of ``env_id``'s entry in ``zoo_configs/dqn.yml`` (or in ``path``).

    ``policy_kwargs`` is parsed into a dict (see :func:`parse_policy_kwargs`); rl-zoo's own
    keys (``n_timesteps``, ``policy``) are left out.

    :param env_id: Gymnasium id
    :param path: an rl-zoo style file instead of the packaged one
    :raises KeyError: the file has no entry for ``env_id``
    :raises ValueError: the entry names another policy or cannot be read
    """
    return _entry(env_id, zoo_entries(path), _name(path))[0]


def load_timesteps(env_id: str, path: str | Path | None = None) -> int:
    """The ``n_timesteps`` of ``env_id``'s entry in ``zoo_configs/dqn.yml`` (or in ``path``).

    :param env_id: Gymnasium id
    :param path: an rl-zoo style file instead of the packaged one
    :raises KeyError: the file has no entry for ``env_id``, or the entry no ``n_timesteps``
    :raises ValueError: the entry names another policy or cannot be read
    """
    return _timesteps(env_id, _entry(env_id, zoo_entries(path), _name(path))[1], _name(path))


def hyperparams_for(env_id: str, path: str | Path | None = None) -> tuple[dict[str, Any], int, str]:
    """``DQN`` keyword arguments, training steps and where they come from, for any env id.

    :param env_id: Gymnasium id
    :param path: an rl-zoo style file whose entry for ``env_id`` must be used (None: the packaged file)
    :return: ``(hyperparams, timesteps, source)``: the file's entry when it has one, else
        :data:`DEFAULT_HYPERPARAMS` and :data:`DEFAULT_TIMESTEPS` (not with ``path``); ``source`` says which
    :raises HyperparamsFileError: ``path`` unreadable, without an entry for ``env_id`` or with a bad one
    """
    entries = zoo_entries(path)
    if path is not None:
        try:
            hyperparams, timesteps = _entry(env_id, entries, _name(path))
            timesteps = _timesteps(env_id, timesteps, _name(path))
        except (KeyError, ValueError, TypeError, SyntaxError) as exc:
            raise HyperparamsFileError(str(exc).strip("'\"")) from None
        unknown = sorted(set(hyperparams) - set(inspect.signature(DQN).parameters) - {"policy"})
        if unknown:
            raise HyperparamsFileError(f"{path}: the {env_id} entry has keys that are not DQN arguments: "
                                       f"{', '.join(unknown)}")
        return hyperparams, timesteps, f"the {env_id} entry of {path}"
    if env_id in entries:
        hyperparams, timesteps = _entry(env_id, entries, _name(None))
        return hyperparams, _timesteps(env_id, timesteps, _name(None)), f"the {env_id} entry of {_name(None)}"
    return (
        copy.deepcopy(DEFAULT_HYPERPARAMS),
        DEFAULT_TIMESTEPS,
        f"the defaults of spiking_dqn.recipes.hyperparams ({_name(None)} has no {env_id} entry)",
    )
