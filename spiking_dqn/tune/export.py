"""``spiking-dqn tune --export FILE``: the recommended trial as a ``zoo_configs/dqn.yml``-style entry.

The entry (:func:`spiking_dqn.tune.space.zoo_entry`) is written in the file's own style:
``n_timesteps``, ``policy``, the ``DQN`` keyword arguments, and ``policy_kwargs`` as a
``dict(...)`` string of literals, which rl-zoo evaluates and
:func:`spiking_dqn.recipes.hyperparams.parse_policy_kwargs` reads. An existing file is merged
as text, so that its other entries, comments, anchors and order stay as they are: the env's
entry, if there is one, is replaced where it stands (a comment line above it says which trial
it came from), else it is appended. A merge that would change another entry (one that merges
the replaced entry through a YAML anchor) is refused. The result is checked by reading it back
before it replaces the file (atomically).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spiking_dqn.files import atomic_write_text
from spiking_dqn.recipes.hyperparams import parse_policy_kwargs

_TOP_KEY = re.compile(r"^(?P<key>[^\s#][^:]*):")


class ExportError(ValueError):
    """The entry cannot be merged into the file."""


def entry_text(env_id: str, entry: Mapping[str, Any], comment: str) -> str:
    """The YAML lines of one entry, in ``zoo_configs/dqn.yml``'s style.

    :param env_id: Gymnasium id (the entry's key)
    :param entry: the entry (:func:`~spiking_dqn.tune.space.zoo_entry`)
    :param comment: one comment line written above it
    """
    lines = [f"# {comment}", f"{env_id}:"]
    for key, value in entry.items():
        lines.append(f"  {key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def merge_entry(text: str, env_id: str, block: str) -> str:
    """``text`` (a YAML file's content) with ``env_id``'s entry replaced by ``block``, or ``block`` appended.

    :raises ExportError: the file is not a mapping of entries, or the merge changes another entry
    """
    before = _entries(text)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _key(line) == env_id), None)
    if start is None:
        merged = text + ("" if not text or text.endswith("\n") else "\n") + ("\n" if text.strip() else "") + block
    else:
        end = next((i for i in range(start + 1, len(lines)) if _key(lines[i]) is not None), len(lines))
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # the comments above the next entry stay with it
        first = start
        while first > 0 and lines[first - 1].startswith("# spiking-dqn tune"):
            first -= 1  # the previous export's comment goes with its entry
        merged = "".join(lines[:first]) + block + "".join(lines[end:])
    try:
        after = _entries(merged)
    except ExportError as exc:
        raise ExportError(f"replacing the {env_id} entry breaks the file ({exc}): other entries merge it through a "
                          "YAML anchor; export to another file") from None
    changed = sorted(k for k in before if k != env_id and before[k] != after.get(k))
    if changed:
        raise ExportError(f"replacing the {env_id} entry would change {', '.join(changed)} (they merge it through a "
                          "YAML anchor); export to another file")
    return merged


def export_entry(path: Path, env_id: str, entry: Mapping[str, Any], comment: str) -> None:
    """Write ``env_id``'s entry into the YAML file ``path`` (created, or merged: see the module docstring).

    :raises ExportError: the file cannot take the entry
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    merged = merge_entry(text, env_id, entry_text(env_id, entry, comment))
    written = _entries(merged)[env_id]
    parse_policy_kwargs(written["policy_kwargs"])  # the package's reader takes it back
    atomic_write_text(path, merged)


def _entries(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ExportError(f"not a YAML file: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ExportError("not a YAML mapping of entries (as zoo_configs/dqn.yml)")
    return data


def _key(line: str) -> str | None:
    match = _TOP_KEY.match(line)
    return match.group("key").strip().strip("'\"") if match else None


def _yaml_value(value: Any) -> str:
    """One scalar in the file's style (a float as ``!!float 5e-4`` where YAML would read it as a string)."""
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]
    if isinstance(value, float):
        text = repr(value)
        return text if yaml.safe_load(text) == value and isinstance(yaml.safe_load(text), float) else f"!!float {text}"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "'" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"'{text}'"
