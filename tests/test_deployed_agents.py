"""The shipped chip programs reach their targets on the emulator (100 episodes each)."""

import json

import pytest

from agents.common import trained_model_path
from spiking_dqn.evaluation import compare
from spiking_dqn.hardware import ChipProgram


def folder(env_id):
    return trained_model_path(env_id).parent


@pytest.fixture(scope="module")
def cartpole():
    return compare(folder("CartPole-v0") / "model_qat.zip", "CartPole-v0",
                   program=folder("CartPole-v0") / "chip_program.npz", n_episodes=100, progress=False).to_dict()


@pytest.fixture(scope="module")
def acrobot():
    return compare(folder("Acrobot-v1") / "model_qat.zip", "Acrobot-v1",
                   program=folder("Acrobot-v1") / "chip_program.npz", n_episodes=100, progress=False).to_dict()


@pytest.mark.parametrize("env_id", ["CartPole-v0", "Acrobot-v1"])
def test_shipped_chip_programs_load_and_are_int8(env_id):
    program = ChipProgram.load(folder(env_id) / "chip_program.npz")
    assert all(w.dtype.name == "int8" for w in program.weights)
    assert program.centered_readout


def test_cartpole_on_the_emulator_reaches_200_and_agrees(cartpole):
    assert cartpole["reward"]["chip"]["mean"]["value"] == 200.0
    assert cartpole["reward"]["float"]["mean"]["value"] == 200.0
    assert cartpole["action_agreement"]["value"] >= 0.98


def test_acrobot_on_the_emulator_is_within_5_percent_of_the_float_agent(acrobot):
    from stable_baselines3 import DQN

    from spiking_dqn.search import float_reward

    trained = float_reward(DQN.load(trained_model_path("Acrobot-v1"), device="cpu"), "Acrobot-v1", 100, seed=0)
    chip = acrobot["reward"]["chip"]["mean"]["value"]
    assert chip >= trained.mean_reward * 1.05  # rewards are negative: at most 5% worse
    assert acrobot["action_agreement"]["value"] >= 0.98


@pytest.mark.parametrize("env_id", ["CartPole-v0", "Acrobot-v1"])
def test_deployment_record_matches(env_id):
    record = json.loads((folder(env_id) / "deployment.json").read_text())
    report = json.loads((folder(env_id) / "deployment" / "report.json").read_text())
    assert record["figures"]["chip_reward"] == report["reward"]["chip"]["mean"]["value"]
