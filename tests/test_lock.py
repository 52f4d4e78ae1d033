"""The requirements lock (``make lock``): what it pins, that installs follow it, and that the recipe reproduces the
shipped CartPole weights under it."""

import hashlib
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn.recipes.versions import LOCK_FILE, TRAINING_PACKAGES, installed_versions, versions_line

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "agents" / "trained" / "CartPole-v0"
#: torch's CPU kernels (``torch.backends.cpu.get_cpu_capability()``) on which the shipped CartPole-v0 weights are
#: not reproduced bit for bit (the machines that made them and passed this test in CI were other CPUs).
NOT_REPRODUCED_ON = ("AVX512",)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def locked() -> dict[str, str]:
    text = LOCK_FILE.read_text()
    return {normalized(name): version for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)}


def test_the_lock_pins_every_dependency_of_the_package_and_its_dev_and_docs_extras_with_hashes_but_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = requirement_names(project["dependencies"] + extras["dev"] + extras["docs"]) - {"torch"}
    pins = locked()
    assert wanted <= set(pins), f"not in {LOCK_FILE.name} (make lock): {sorted(wanted - set(pins))}"
    assert "torch" not in pins  # pip installs exactly torch==2.13.0, the CPU wheel
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK_FILE.read_text().split("\n", 2)[2])
    assert len(entries) == len(pins) and all("--hash=sha256:" in entry for entry in entries)


def test_make_install_installs_the_lock_hash_checked():
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK   := requirements.lock" in makefile
    assert "uv pip install --python $(BIN)/python --require-hashes --no-deps -r $(LOCK)" in makefile


def test_installed_versions_give_the_lock_hash_and_what_differs_from_it(tmp_path):
    versions = installed_versions()
    assert set(versions["packages"]) == set(TRAINING_PACKAGES)
    assert versions["lock_sha256"] == hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    assert versions["lock_sha256"] in versions_line(versions)
    numpy_version = versions["packages"]["numpy"]
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"numpy==0.0.1 \\\n    --hash=sha256:00\nnot-a-package==1.0\nnumpy-stub>=1\n")
    other = installed_versions(lock)
    assert other["lock_differs"] == [f"numpy==0.0.1 ({numpy_version})", "not-a-package==1.0 (missing)"]
    assert "2 locked packages differ: numpy==0.0.1" in versions_line(other)
    assert "no requirements.lock" in versions_line(installed_versions(tmp_path / "requirements.lock.absent"))


@pytest.mark.slow  # the recipe's training up to its first evaluation at CartPole-v0's maximum, 200: about a minute
@pytest.mark.timeout(1800)
def test_the_recipe_retrains_the_shipped_cartpole_weights_bit_for_bit_under_the_lock(tmp_path, monkeypatch):
    from agents.cartpole import ENV_ID, HYPERPARAMS, TIMESTEPS
    from agents.common import parse_args
    from spiking_dqn.recipes import recipe

    differs = installed_versions()["lock_differs"]
    if differs:
        pytest.skip(f"the installed packages are not the lock's: {', '.join(differs)}")
    capability = th.backends.cpu.get_cpu_capability()
    if capability in NOT_REPRODUCED_ON:
        # Bit for bit holds on one kind of CPU: torch, numba and numpy pick vector kernels by the CPU, and their
        # rounding with them. On an AVX-512 machine the run left the shipped one from its first evaluation on, for the
        # commit whose CI had passed this test too (2026-12-07); AVX2 kernels forced by environment variables
        # (ATEN_CPU_CAPABILITY, NUMBA_CPU_NAME, MKL, oneDNN, numpy) changed the run but did not give the shipped one.
        pytest.skip(f"torch's kernels on this CPU are {capability}'s: the shipped weights were made, and "
                    "reproduced in CI, on other CPUs")

    class StopAtTheMaximum(recipe.RecipeEvalCallback):
        """The recipe's evaluations, training stopped after the first at the maximum return.

        A later evaluation replaces the kept model only with a strictly higher mean (SB3's
        ``EvalCallback``), which no evaluation can reach past 200: the kept model is the full run's.
        """

        def _on_step(self) -> bool:
            return super()._on_step() and self.best_mean_reward < MAX_RETURN

    MAX_RETURN = 200.0
    monkeypatch.setattr(recipe, "RecipeEvalCallback", StopAtTheMaximum)
    # The card's first command (the training, before QAT), into a temporary folder.
    options = parse_args(ENV_ID, TIMESTEPS, ["--seed", "5", "--out", str(tmp_path), "--no-progress"])
    hyperparams = recipe.with_overrides(HYPERPARAMS, options)
    recipe.learn(recipe.make_model(ENV_ID, hyperparams, options), ENV_ID, options, "test", hyperparams)
    shipped_evaluations = np.load(SHIPPED / "evaluations.npz")["results"]
    evaluations = np.load(tmp_path / "evaluations.npz")["results"]
    np.testing.assert_array_equal(evaluations, shipped_evaluations[: len(evaluations)])
    retrained = DQN.load(tmp_path / recipe.TRAINED_NAME, device="cpu").policy.state_dict()
    shipped = DQN.load(SHIPPED / recipe.TRAINED_NAME, device="cpu").policy.state_dict()
    assert list(retrained) == list(shipped)
    for name, value in shipped.items():
        if isinstance(value, th.Tensor):
            np.testing.assert_array_equal(retrained[name].numpy(), value.numpy(), err_msg=name)
        else:  # the network's extra state (its settings)
            assert repr(retrained[name]) == repr(value), name
