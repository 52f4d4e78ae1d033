"""HardwareAwareFineTuning: from model.learn(), from rl-zoo's `callback:` key, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch as th
import yaml
from stable_baselines3 import DQN

from envs import make_vec
from spiking_dqn import HardwareAwareFineTuning, SpikingDQNPolicy
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.pipeline import CalibrationSettings, QATSettings, SearchSettings, StateSettings
from spiking_dqn.search import StorageUnavailableError

ROOT = Path(__file__).resolve().parents[1]
SEARCH = dict(stage1_grid=[0.5, 1.0, 2.0], stage2_factors=[0.8, 1.25], episodes=1)
SMALL = dict(search=SEARCH, qat=dict(check_episodes=1), eval_episodes=2)


def tiny_dqn(tensorboard_log=None):
    th.manual_seed(0)
    return DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), learning_starts=100, train_freq=16,
               gradient_steps=4, batch_size=32, buffer_size=5000, seed=0, tensorboard_log=tensorboard_log,
               policy_kwargs=dict(net_arch=[16, 8], ticks=6))


def test_callback_quantizes_fine_tunes_searches_logs_and_saves(tmp_path):
    model = tiny_dqn(tensorboard_log=str(tmp_path / "tb"))
    callback = HardwareAwareFineTuning(qat=QATSettings(20, check_episodes=0), method="both", eval_freq=150,
                                       save_path=str(tmp_path / "hw"), calibration=dict(n_observations=64),
                                       search=SEARCH, eval_episodes=2)
    weights = [w.detach().clone() for w in model.policy.q_net.parameters()]
    model.learn(300, callback=callback)
    assert [r["tag"] for r in callback.results] == ["step_150", "step_300", "final"]
    final = tmp_path / "hw" / "final"
    for name in ("best_program.npz", "summary.json", "threshold_search.csv", "threshold_search.json",
                 "threshold_search.png", "calibration.json", "calibrated_program.npz"):
        assert (final / name).is_file(), name
    summary = json.loads((final / "summary.json").read_text())
    assert summary["env_id"] == "CartPole-v1" and summary["chosen"] in ("naive", "grid", "calibration")
    assert summary["reward"] == max(summary["reward_naive_final"], summary["reward_grid"],
                                    summary["reward_calibration"])
    assert summary["qat"]["steps"] == 20 and "reward_after_qat" in summary
    assert np.mean(summary["qat"]["grid_distance_after"]) < np.mean(summary["qat"]["grid_distance_before"])
    assert summary["energy"]["estimated"]["total_energy_j"] > 0
    program = ChipProgram.load(final / "best_program.npz")
    assert program == callback.best_program
    assert [float(np.mean(t)) for t in program.thresholds[:-1]] == pytest.approx(summary["thresholds"])
    assert any(not th.equal(a, b) for a, b in zip(weights, model.policy.q_net.parameters()))
    # TensorBoard scalars under hardware/.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list((tmp_path / "tb").iterdir())
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("reward", "reward_naive", "reward_float", "threshold_0", "threshold_1", "threshold_multiplier_0",
                "spikes_per_inference", "synaptic_events_per_inference", "energy_per_inference_j",
                "search_backend_inferences", "reward_after_qat", "qat_grid_distance"):
        assert f"hardware/{tag}" in tags, tag
    assert len(events.Scalars("hardware/reward")) == 3


def test_callback_rejects_bad_options():
    with pytest.raises(ValueError, match="method"):
        HardwareAwareFineTuning(method="anneal")
    with pytest.raises(ValueError, match="stage1_grid"):
        HardwareAwareFineTuning(search=dict(stage1_grid=[]))
    with pytest.raises(ValueError, match="stage2_factors"):
        HardwareAwareFineTuning(search=SearchSettings(stage2_factors=(1.0, -2.0)))
    with pytest.raises(ValueError, match="eval_episodes"):
        HardwareAwareFineTuning(eval_episodes=0)
    with pytest.raises(ValueError, match="grid_pull"):
        HardwareAwareFineTuning(qat=dict(steps=10, grid_pull=2.0))
    with pytest.raises(ValueError, match="mode"):
        HardwareAwareFineTuning(qat=dict(mode="offline"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        HardwareAwareFineTuning(qat=dict(keep="better"))  # a key that is no QATSettings field
    with pytest.raises(TypeError, match="QATSettings or a mapping"):
        HardwareAwareFineTuning(qat=100)


def test_callback_settings_from_mappings_equal_the_settings_objects():
    callback = HardwareAwareFineTuning(qat=dict(steps=100, mode="replay"), state=dict(bits=4),
                                       search=dict(stage1_grid=[1, 2], storage="sqlite:///x.db"),
                                       calibration=dict(n_observations=32, granularity="layer"))
    assert callback.qat == QATSettings(steps=100, mode="replay")
    assert callback.state == StateSettings(bits=4)
    assert callback.search == SearchSettings(stage1_grid=(1.0, 2.0), storage="sqlite:///x.db")
    assert callback.calibration == CalibrationSettings(n_observations=32, granularity="layer")
    defaults = HardwareAwareFineTuning()
    assert (defaults.qat, defaults.state, defaults.search) == (None, StateSettings(), SearchSettings())  # None: robust


def test_callback_with_an_unreachable_storage_fails_before_training(tmp_path):
    model = tiny_dqn()
    callback = HardwareAwareFineTuning(search=dict(SEARCH, storage="postgresql://user@127.0.0.1:1/db"),
                                       save_path=str(tmp_path), eval_episodes=2)
    with pytest.raises(StorageUnavailableError, match="cannot reach"):
        model.learn(200, callback=callback)
    assert model.num_timesteps == 0


@pytest.mark.slow
def test_callback_from_rl_zoo_hyperparameter_file(tmp_path):
    hw, db = tmp_path / "hw", tmp_path / "zoo.db"
    config = {
        "CartPole-v1": {
            "n_timesteps": 300,
            "policy": "spiking_dqn.SpikingDQNPolicy",
            "learning_starts": 100,
            "train_freq": 16,
            "gradient_steps": 4,
            "batch_size": 32,
            "buffer_size": 5000,
            "policy_kwargs": "dict(net_arch=[16], ticks=6)",
            "callback": [
                {
                    "spiking_dqn.callbacks.HardwareAwareFineTuning": dict(
                        qat=dict(steps=10, check_episodes=1), save_path=str(hw), eval_episodes=2,
                        search=dict(SEARCH, storage=f"sqlite:///{db}"),
                    )
                }
            ],
        }
    }
    conf = tmp_path / "dqn.yml"
    conf.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v1", "-conf", str(conf),
         "-n", "300", "-f", str(tmp_path / "logs"), "--seed", "0", "--eval-freq", "-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "CartPole-v1.zip").exists()
    summary = json.loads((hw / "final" / "summary.json").read_text())
    assert summary["qat"]["steps"] == 10 and summary["env_id"] == "CartPole-v1"
    assert ChipProgram.load(hw / "final" / "best_program.npz")
    assert (hw / "final" / "threshold_search.csv").is_file()
    names = optuna.get_all_study_names(f"sqlite:///{db}")
    assert len(names) == 2 and all(n.startswith("threshold-search-final-") for n in names)
