"""The rl-zoo hyperparameter file: the recipes' one source, shipped in the wheel, and playable with rl_zoo3."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spiking_dqn.recipes import hyperparams
from spiking_dqn.recipes.hyperparams import load_hyperparams, parse_policy_kwargs

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


def test_recipes_use_exactly_the_file_entries():
    from agents import acrobot, cartpole

    config = yaml.safe_load(CONFIG.read_text())
    assert {"CartPole-v0", "CartPole-v1", "Acrobot-v1"} <= set(config)
    for recipe in (cartpole, acrobot):
        entry = dict(config[recipe.ENV_ID])
        assert entry.pop("policy") == "spiking_dqn.SpikingDQNPolicy"
        assert recipe.TIMESTEPS == int(entry.pop("n_timesteps"))
        # rl-zoo evaluates the string; evaluated with builtins only, it gives what the recipe trains with
        assert recipe.HYPERPARAMS["policy_kwargs"] == eval(entry.pop("policy_kwargs"), {"__builtins__": {"dict": dict}})
        assert recipe.HYPERPARAMS == {**entry, "policy_kwargs": recipe.HYPERPARAMS["policy_kwargs"]}
        assert recipe.HYPERPARAMS == load_hyperparams(recipe.ENV_ID)


def test_the_file_ships_in_the_wheel_and_is_read_as_a_package_resource(monkeypatch):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert "zoo_configs*" in setuptools["packages"]["find"]["include"]
    assert "dqn.yml" in setuptools["package-data"]["zoo_configs"]
    assert (ROOT / "zoo_configs" / "__init__.py").is_file()
    # read through importlib.resources from the zoo_configs package, not from a path of the clone
    calls = []
    files = hyperparams.resources.files
    monkeypatch.setattr(hyperparams.resources, "files", lambda package: calls.append(package) or files(package))
    assert hyperparams.zoo_entries() == yaml.safe_load(CONFIG.read_text())
    assert calls == ["zoo_configs"]


def test_policy_kwargs_are_read_without_evaluating_them():
    assert parse_policy_kwargs("dict(net_arch=[64, 64], ticks=16, obs_bound=[1.0, 6.0])") == {
        "net_arch": [64, 64], "ticks": 16, "obs_bound": [1.0, 6.0]
    }
    assert parse_policy_kwargs("{'ticks': 8}") == {"ticks": 8}
    for text in ("__import__('os').system('true')", "dict(ticks=len('abc'))", "dict(**x)", "dict(", "[1, 2]"):
        with pytest.raises(ValueError):
            parse_policy_kwargs(text)


def test_an_env_without_an_entry_gets_the_documented_defaults():
    params, timesteps, source = hyperparams.hyperparams_for("MountainCar-v0")
    assert params == hyperparams.DEFAULT_HYPERPARAMS and params is not hyperparams.DEFAULT_HYPERPARAMS
    assert timesteps == hyperparams.DEFAULT_TIMESTEPS and "defaults" in source
    params, timesteps, source = hyperparams.hyperparams_for("CartPole-v1")
    assert timesteps == 100_000 and params == load_hyperparams("CartPole-v0") and "entry" in source
    with pytest.raises(KeyError):
        load_hyperparams("MountainCar-v0")


@pytest.mark.slow
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
