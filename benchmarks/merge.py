"""Keeping the figures of earlier runs when a study script evaluates only part of its points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merge_with_previous(
    previous: Path, rows: list[dict[str, Any]], references: dict[str, float]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """This run's rows and references, with those of ``previous`` (a study's JSON file) for what this run did not evaluate.

    A point is ``(env_id, variant)``: every row of a point evaluated now replaces the old
    rows of that point; old points not evaluated now are kept, in their order, before the
    new rows; old references of tasks not measured now are kept.

    :param previous: the study's JSON file (``rows`` and ``references_float_reward``); absent: nothing to merge
    :param rows: this run's rows (each with ``env_id`` and ``variant``)
    :param references: this run's float rewards by task
    """
    if not previous.exists():
        return rows, references
    old = json.loads(previous.read_text())
    evaluated = {(r["env_id"], r["variant"]) for r in rows}
    kept = [r for r in old.get("rows", []) if (r["env_id"], r["variant"]) not in evaluated]
    merged = {**{k: v for k, v in old.get("references_float_reward", {}).items() if k not in references}, **references}
    return kept + rows, merged
