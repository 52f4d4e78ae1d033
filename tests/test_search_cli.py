"""`spiking-dqn search` and `spiking-dqn calibrate` on a saved model."""

from __future__ import annotations

import json

import pytest
import torch as th
from stable_baselines3 import DQN

from envs import make_vec
from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.cli import main
from spiking_dqn.hardware import ChipProgram

SMALL = ["--env", "CartPole-v1", "--stage1", "0.5,1,2", "--stage2", "0.8,1.25", "--episodes", "1",
         "--final-episodes", "2", "--no-progress"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    th.manual_seed(0)
    model = DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), learning_starts=100, train_freq=16,
                gradient_steps=4, batch_size=32, buffer_size=5000, seed=0, policy_kwargs=dict(net_arch=[16], ticks=6))
    model.learn(200)
    path = tmp_path_factory.mktemp("model") / "model.zip"
    model.save(path)
    return path


def test_search_writes_results_and_resumes(model_path, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    out = tmp_path / "out"
    assert main(["search", str(model_path), *SMALL, "--storage", storage, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 evaluations in this run" in printed  # 3 global + 2 for the one hidden layer
    for name in ("threshold_search.csv", "threshold_search.json", "threshold_search.png", "best_program.npz",
                 "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final"]) == {"float", "naive", "grid"}
    ChipProgram.load(out / "best_program.npz")
    # The same command again finds every evaluation in the study and repeats none.
    assert main(["search", str(model_path), *SMALL, "--storage", storage, "--out", str(out)]) == 0
    assert "0 evaluations in this run" in capsys.readouterr().out


def test_calibrate_writes_results(model_path, tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", str(model_path), "--env", "CartPole-v1", "--observations", "32",
                 "--final-episodes", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no backend episodes" in printed
    data = json.loads((out / "calibration.json").read_text())
    assert data["n_observations"] == 32 and data["backend_episodes"] == 0
    ChipProgram.load(out / "calibrated_program.npz")
    assert set(json.loads((out / "summary.json").read_text())["final"]) == {"float", "naive", "calibration"}


def test_search_bad_input(model_path, tmp_path, capsys):
    assert main(["search", str(model_path), *SMALL, "--storage", "postgresql://u@127.0.0.1:1/db",
                 "--out", str(tmp_path)]) == 3
    assert "cannot reach" in capsys.readouterr().err
    assert not (tmp_path / "threshold_search.csv").exists()
    args = ["search", str(model_path), "--env", "CartPole-v1", "--stage1", "0,1", "--no-progress",
            "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "multipliers must be positive" in capsys.readouterr().err
    assert main(["search", str(model_path), "--no-progress"]) == 2
    assert "--env is required" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "missing.zip"), "--env", "CartPole-v1"]) == 2
    assert "no model file" in capsys.readouterr().err


def test_calibrate_after_qat(model_path, tmp_path, capsys):
    out = tmp_path / "qat"
    assert main(["calibrate", str(model_path), "--env", "CartPole-v1", "--observations", "32", "--qat-steps", "64",
                 "--final-episodes", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "QAT: reward of the quantized network" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["qat"]["steps"] == 64 and summary["qat"]["mode"] == "distill"  # the default --qat-mode
    assert (out / "model_qat.zip").exists() == summary["qat"]["kept"]
    assert summary["reward"] >= summary["reward_ptq"]  # never worse than plain post-training quantization
    assert "gap" in printed and "held-out episodes" in printed
    assert summary["qat"]["reward_after"] >= summary["qat"]["reward_before"]
