"""rl-zoo integration: the hyperparameter file trains and the result plays with rl_zoo3.enjoy."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "zoo_configs" / "dqn.yml"


def _zoo(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _env() -> dict:
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_config_entries_use_the_spiking_policy_and_match_the_recipes():
    from agents import acrobot, cartpole

    config = yaml.safe_load(CONFIG.read_text())
    assert {"CartPole-v0", "CartPole-v1", "Acrobot-v1"} <= set(config)
    for env_id, recipe in [("CartPole-v0", cartpole), ("Acrobot-v1", acrobot)]:
        entry = dict(config[env_id])
        assert entry.pop("policy") == "spiking_dqn.SpikingDQNPolicy"
        assert int(entry.pop("n_timesteps")) == recipe.TIMESTEPS
        policy_kwargs = eval(entry.pop("policy_kwargs"), {"__builtins__": {"dict": dict}})
        expected = dict(recipe.HYPERPARAMS)
        assert policy_kwargs == expected.pop("policy_kwargs")
        assert entry == expected


def test_rl_zoo_train_then_enjoy(tmp_path):
    _zoo(
        "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v0", "-conf", str(CONFIG),
        "-n", "1200", "-f", str(tmp_path), "--seed", "0", "--eval-freq", "-1",
    )
    assert (tmp_path / "dqn" / "CartPole-v0_1" / "CartPole-v0.zip").exists()
    out = _zoo(
        "rl_zoo3.enjoy", "--algo", "dqn", "--env", "CartPole-v0", "-f", str(tmp_path),
        "--n-timesteps", "200", "--no-render",
    )
    assert "Mean reward" in out
