"""``training.json``, ``eval.json`` and the model card record the package versions, the lock's hash and the CPU kernels."""

from __future__ import annotations

import json

import torch as th

from spiking_dqn.cli import main
from spiking_dqn.recipes.versions import installed_versions, versions_line


def test_a_training_run_records_the_packages_and_the_lock(tmp_path):
    out = tmp_path / "run"
    args = ["train", "CartPole-v1", "--timesteps", "300", "--eval-freq", "200", "--select-episodes", "1",
            "--eval-episodes", "1", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    versions = installed_versions()
    for name in ("training.json", "eval.json"):
        record = json.loads((out / name).read_text())
        assert record["packages"] == versions, name
        # floating-point rounding follows torch's vector kernels: a bit-for-bit retraining needs the same
        assert record["machine"].endswith(f", {th.backends.cpu.get_cpu_capability()} kernels"), name
    assert versions_line(versions) in (out / "README.md").read_text()
