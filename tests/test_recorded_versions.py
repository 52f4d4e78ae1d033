"""``training.json``, ``eval.json`` and the model card record the package versions and the lock's hash."""

from __future__ import annotations

import json

from spiking_dqn.cli import main
from spiking_dqn.recipes.versions import installed_versions, versions_line


def test_a_training_run_records_the_packages_and_the_lock(tmp_path):
    out = tmp_path / "run"
    args = ["train", "CartPole-v1", "--timesteps", "300", "--eval-freq", "200", "--select-episodes", "1",
            "--eval-episodes", "1", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    versions = installed_versions()
    for name in ("training.json", "eval.json"):
        assert json.loads((out / name).read_text())["packages"] == versions, name
    assert versions_line(versions) in (out / "README.md").read_text()
