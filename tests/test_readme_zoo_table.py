"""The README's classic-control table against rl-zoo (issue 26): every figure of a shipped agent is its files' figure.

The float reward is the card's ``eval.json``, the chip reward and the synaptic events are the
deployment report's, the target is ``envs.rewards.TARGET_REWARD`` (met or not as the chip
reward says) and the seed count is the robustness study's ``default`` fit in
``benchmarks/results/robustness.json``: the table cannot drift from what was measured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from envs.rewards import TARGET_REWARD

ROOT = Path(__file__).resolve().parents[1]
HEADING = "### rl-zoo's classic-control DQN table on the chip"


def _rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    assert HEADING in text
    lines = text.split(HEADING, 1)[1].splitlines()
    table = [line for line in lines[: next(i for i, l in enumerate(lines) if l.startswith("What `model.zip`"))]
             if line.startswith("| ") and not line.startswith("| task") and not line.startswith("| ---")]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)}


def test_the_table_has_rl_zoos_four_tasks_with_their_targets() -> None:
    rows = _rows()
    assert list(rows) == ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"]
    for env_id, cells in rows.items():
        assert cells[2].split()[0] == f"{TARGET_REWARD[env_id]:g}"


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"])
def test_a_rows_figures_are_its_files_figures(env_id: str) -> None:
    """A shipped agent's row is its files' figures; a task without one says so; the seed count is the study's."""
    cells = _rows()[env_id]
    folder = ROOT / "agents" / "trained" / env_id
    if (folder / "model.zip").exists():
        report = json.loads((folder / "deployment" / "report.json").read_text())
        float_reward = json.loads((folder / "eval.json").read_text())["mean_reward"]
        chip = report["reward"]["chip"]["mean"]["value"]
        assert cells[3] == f"{float_reward:.2f} / {chip:.2f}"
        assert cells[5] == f"{round(report['activity']['synaptic_events']['value']):,}"
        assert cells[2] == f"{TARGET_REWARD[env_id]:g} ({'met' if chip >= TARGET_REWARD[env_id] else 'not met'})"
    else:
        assert cells[3].startswith(("not trained yet", "not shipped")) and cells[5] == "-", cells
    rows = [r for r in json.loads((ROOT / "benchmarks" / "results" / "robustness.json").read_text())["rows"]
            if r["env_id"] == env_id and r["weight_bits"] == 8 and "default" in r["fits"]]
    if not rows:
        assert cells[6] == "-"
        return
    reached = sum(r["fits"]["default"]["chip_reward"] >= TARGET_REWARD[env_id] for r in rows)
    assert re.match(rf"{reached} of {len(rows)}\b", cells[6]), cells[6]
