"""Which trained agent a cached folder or a row of the robustness study is (``benchmarks/robustness.py``).

An agent is named by its training command (``spiking-dqn train ... --out FOLDER``, the folder
written relative to the repository so that the command reads the same in every clone) and
the recipe that trained it (``recipe.json`` beside ``command.txt``); a row of an earlier run
is the same agent's when the command and the weights (``model_digest``) are the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: What trained a cached agent (its steps and hyperparameters), beside its ``command.txt``.
RECIPE_NAME = "recipe.json"


def repo_relative(folder: Path) -> str:
    """``folder`` relative to the repository root when it lies inside it (else as given): the
    ``--out`` of the recorded training commands, so that they read the same in every clone."""
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def portable(command: str | None) -> str | None:
    """``command`` with an ``--out`` inside this repository written relative to its root.

    Rows and cached agents from before the commands were recorded relative (absolute
    ``--out`` folders of this clone) compare equal to the same command written now.
    """
    return None if command is None else command.replace(f" --out {ROOT}/", " --out ")


def cached(folder: Path, command: str, hyperparams: dict[str, Any], timesteps: int) -> bool:
    """Whether ``folder`` holds an agent trained by ``command`` with these hyperparameters and steps.

    The command alone does not say what trained: it names the recipe, whose entry may have
    changed since (a folder from before ``recipe.json`` was written is taken on its command
    and its recorded steps).
    """
    if not (folder / "eval.json").exists() or not (folder / "command.txt").exists():
        return False
    if portable((folder / "command.txt").read_text().strip()) != portable(command):
        return False
    recipe = folder / RECIPE_NAME
    if recipe.exists():
        return json.loads(recipe.read_text()) == json.loads(json.dumps(recipe_record(hyperparams, timesteps)))
    return json.loads((folder / "eval.json").read_text()).get("timesteps") == timesteps


def recipe_record(hyperparams: dict[str, Any], timesteps: int) -> dict[str, Any]:
    """What ``recipe.json`` records of the recipe that trains an agent (and :func:`cached` compares)."""
    return {"timesteps": timesteps, "hyperparams": hyperparams}


def keep_other_variants(previous: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the fits of variants not run now taken from ``previous``'s row of the same agent.

    The same agent: task, seed, weight width, training command and weights (the network's
    :func:`~spiking_dqn.quantization.digest.model_digest`; for a row from before it was recorded,
    its float reward on the same episodes). A retrained agent keeps nothing, even from the same
    command: on another CPU, or after a change of the recipe's entry, it trains other weights.
    """
    if not previous.exists():
        return rows
    old = {(r["env_id"], r["variant"], portable(r.get("train_command"))): r
           for r in json.loads(previous.read_text())["rows"]}
    out = []
    for r in rows:
        before = old.get((r["env_id"], r["variant"], portable(r["train_command"])))
        if before is not None and not same_agent(before, r):
            before = None
        fits = {**before["fits"], **r["fits"]} if before is not None else r["fits"]
        out.append({**r, "fits": fits})
    return out


def same_agent(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two rows of one task, seed and command measured the same weights (see :func:`keep_other_variants`)."""
    if "model_digest" in before:
        return before["model_digest"] == now.get("model_digest")
    return (before["float_reward"], before["float_std"], before["episodes"], before["eval_seed"]) == (
        now["float_reward"], now["float_std"], now["episodes"], now["eval_seed"])
