"""The shipped chip programs reach their targets on the emulator (100 episodes each)."""

import json

import pytest

from agents.common import trained_model_path
from envs.rewards import random_reward, worst_reward
from spiking_dqn.compare import compare
from spiking_dqn.hardware import ChipProgram


def folder(env_id):
    return trained_model_path(env_id).parent


@pytest.fixture(scope="module")
def cartpole():
    return compare(folder("CartPole-v0") / "model.zip", "CartPole-v0",
                   program=folder("CartPole-v0") / "chip_program.npz", n_episodes=100, progress=False).to_dict()


@pytest.fixture(scope="module")
def acrobot():
    return compare(folder("Acrobot-v1") / "model.zip", "Acrobot-v1",
                   program=folder("Acrobot-v1") / "chip_program.npz", n_episodes=100, progress=False).to_dict()


#: The shipped agents (each folder of agents/trained with its chip program, float twin and card).
SHIPPED = ["CartPole-v0", "Acrobot-v1", "CartPole-v1", "MountainCar-v0", "LunarLander-v3"]


@pytest.mark.parametrize("env_id", SHIPPED)
def test_shipped_chip_programs_load_and_are_int8(env_id):
    program = ChipProgram.load(folder(env_id) / "chip_program.npz")
    assert all(w.dtype.name == "int8" for w in program.weights)
    assert program.centered_readout


@pytest.mark.parametrize("env_id", SHIPPED)
def test_shipped_agent_deploys_with_its_qat_grid(env_id):
    """``HardwarePolicy.from_model`` on the shipped model.zip rebuilds the shipped chip program bit for bit."""
    import numpy as np
    from stable_baselines3 import DQN

    from spiking_dqn import HardwarePolicy

    model = DQN.load(folder(env_id) / "model.zip", device="cpu")
    card = json.loads((folder(env_id) / "eval.json").read_text())
    assert list(model.policy.q_net.q_net.grid.lambdas) == pytest.approx(card["qat"]["lambdas"], rel=1e-6)
    program = HardwarePolicy.from_model(model).program
    shipped = ChipProgram.load(folder(env_id) / "chip_program.npz")
    assert program.lambdas == shipped.lambdas
    for field in ("weights", "thresholds", "alpha_decay", "i_offset"):
        ours, theirs = getattr(program, field), getattr(shipped, field)
        assert len(ours) == len(theirs)
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(ours, theirs)), field


@pytest.mark.slow  # 100 episodes, float and emulator
def test_cartpole_on_the_emulator_reaches_200_and_agrees(cartpole):
    assert cartpole["reward"]["chip"]["mean"]["value"] == 200.0
    assert cartpole["reward"]["float"]["mean"]["value"] == 200.0
    assert cartpole["action_agreement"]["value"] >= 0.98


@pytest.mark.slow  # 100 episodes, float and emulator
def test_acrobot_on_the_emulator_is_within_5_percent_of_the_float_agent(acrobot):
    from stable_baselines3 import DQN

    from spiking_dqn.rollouts import float_reward

    chip = acrobot["reward"]["chip"]["mean"]["value"]
    # The shipped float agent (model.zip, fine-tuned for the int8 grid by the recipe) ...
    assert chip >= acrobot["reward"]["float"]["mean"]["value"] * 1.05  # rewards are negative: at most 5% worse
    assert acrobot["action_agreement"]["value"] >= 0.98
    # ... and the agent as trained, before QAT, on the same episodes.
    as_trained = DQN.load(folder("Acrobot-v1") / "model_trained.zip", device="cpu")
    assert chip >= float_reward(as_trained, "Acrobot-v1", 100, seed=0).mean_reward * 1.05


@pytest.mark.slow  # 100 episodes on the emulator
def test_cartpole_v1_on_the_emulator_reaches_issue_26s_target():
    """CartPole-v1: at least 495 on the emulated chip over 100 held-out episodes (issue 26), env seeds 0..99."""
    from spiking_dqn.rollouts import backend_reward

    program = ChipProgram.load(folder("CartPole-v1") / "chip_program.npz")
    assert backend_reward(program, "CartPole-v1", 100, seed=0).mean_reward >= 495.0


@pytest.mark.slow  # 100 episodes, float and emulator
def test_mountaincar_on_the_emulator_keeps_the_float_agents_reward():
    """MountainCar-v0 (issue 25: at least 95% of the float agent's normalised reward), env seeds 0..99."""
    from stable_baselines3 import DQN

    from spiking_dqn.rollouts import backend_reward, float_reward

    env_id = "MountainCar-v0"
    chip = backend_reward(ChipProgram.load(folder(env_id) / "chip_program.npz"), env_id, 100, seed=0).mean_reward
    as_trained = float_reward(DQN.load(folder(env_id) / "model_trained.zip", device="cpu"), env_id, 100, seed=0)
    worst = worst_reward(env_id)
    assert as_trained.mean_reward > -200.0  # the agent learned: it reaches the flag
    assert (chip - worst) / (as_trained.mean_reward - worst) >= 0.95


@pytest.mark.slow  # 100 episodes, float and emulator
def test_lunarlander_on_the_emulator_reaches_issue_26s_target_and_keeps_the_float_agents_reward():
    """LunarLander-v3: at least 150 on the emulated chip (issue 26) and 95% of the float agent's normalised reward
    (issue 25), env seeds 0..99."""
    from stable_baselines3 import DQN

    from spiking_dqn.rollouts import backend_reward, float_reward

    env_id = "LunarLander-v3"
    chip = backend_reward(ChipProgram.load(folder(env_id) / "chip_program.npz"), env_id, 100, seed=0).mean_reward
    as_trained = float_reward(DQN.load(folder(env_id) / "model_trained.zip", device="cpu"), env_id, 100, seed=0)
    worst = worst_reward(env_id, random_reward(env_id, 100, seed=0))  # no bounded minimum: the random policy's
    assert chip >= 150.0
    assert (chip - worst) / (as_trained.mean_reward - worst) >= 0.95


@pytest.mark.parametrize("env_id", SHIPPED)
def test_deployment_record_matches(env_id):
    record = json.loads((folder(env_id) / "deployment.json").read_text())
    report = json.loads((folder(env_id) / "deployment" / "report.json").read_text())
    assert record["figures"]["chip_reward"] == report["reward"]["chip"]["mean"]["value"]


# ---------------------------------------------------------------------- the low-precision agents (precision study)

#: Ternary targets of the precision study (normalised reward): CartPole 97%, Acrobot 90%; 4-bit: 98% on both.
LOW_PRECISION = [("CartPole-v0", "w4", 4, 0.98), ("CartPole-v0", "ternary", 2, 0.97),
                 ("Acrobot-v1", "w4", 4, 0.98), ("Acrobot-v1", "ternary", 2, 0.90)]


@pytest.mark.parametrize("env_id, name, bits, target", LOW_PRECISION)
def test_low_precision_agents_are_their_widths_and_their_float_twins(env_id, name, bits, target):
    import numpy as np
    from stable_baselines3 import DQN

    from spiking_dqn import HardwarePolicy

    program = ChipProgram.load(folder(env_id) / name / "chip_program.npz")
    limit = 2 ** (bits - 1) - 1
    assert program.weight_bits == [bits] * len(program.weights)
    assert all(int(np.abs(w).max()) <= limit for w in program.weights)
    assert program.state_levels is None and program.tick_gain is None
    int8 = ChipProgram.load(folder(env_id) / "chip_program.npz")
    assert sum(program.weight_memory) <= sum(int8.weight_memory) * bits / 8  # bits counted, not int8 storage
    model = DQN.load(folder(env_id) / name / "model.zip", device="cpu")
    assert HardwarePolicy.from_model(model).program == program


@pytest.mark.parametrize("env_id, name, bits, target", LOW_PRECISION)
def test_low_precision_agents_keep_their_reward(env_id, name, bits, target):
    """On a few held-out episodes (the study's 100 are in its card): the target, with a margin for so few."""
    from spiking_dqn.rollouts import backend_reward, float_reward
    from stable_baselines3 import DQN

    episodes = 10 if env_id == "CartPole-v0" else 5
    reference = float_reward(DQN.load(folder(env_id) / "model.zip", device="cpu"), env_id, episodes, seed=30_000)
    reward = backend_reward(ChipProgram.load(folder(env_id) / name / "chip_program.npz"), env_id, episodes,
                            seed=30_000).mean_reward
    normalised = (reward - worst_reward(env_id)) / (reference.mean_reward - worst_reward(env_id))
    assert normalised >= target - 0.05


# ---------------------------------------------------------------------- which model each shipped program was built from

SHIPPED_PROGRAMS = [(env_id, name) for env_id in ("CartPole-v0", "Acrobot-v1")
                    for name in ("", "low_energy", "w4", "ternary")] + [("CartPole-v1", ""), ("MountainCar-v0", ""), ("LunarLander-v3", "")]


@pytest.mark.parametrize("env_id, name", SHIPPED_PROGRAMS)
def test_each_shipped_program_records_the_digest_of_its_shipped_model(env_id, name):
    """Every shipped chip program names the model.zip next to it, and rebuilds from it bit for bit, digest included."""
    from stable_baselines3 import DQN

    from spiking_dqn import HardwarePolicy
    from spiking_dqn.quantization import model_digest

    where = folder(env_id) / name
    model = DQN.load(where / "model.zip", device="cpu")
    program = ChipProgram.load(where / "chip_program.npz")
    assert program.model_digest == model_digest(model)
    assert HardwarePolicy.from_model(model).program == program


def test_the_docs_recipe_times_are_the_shipped_cards():
    """docs/training.md's training times are the figures the recipes measured into the shipped cards (eval.json)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    for env_id, module in [("CartPole-v0", "cartpole"), ("Acrobot-v1", "acrobot")]:
        card = json.loads((folder(env_id) / "eval.json").read_text())
        measured = card.get("train_wall_time_remeasured", {}).get("wall_time_s", card["train_wall_time_s"])
        line = next(line for line in text.splitlines() if line.startswith(f"python -m agents.{module} "))
        claimed = re.search(r"# trains in (\d+) s$", line)
        assert claimed is not None and int(claimed.group(1)) == round(measured), line


@pytest.mark.parametrize("env_id", SHIPPED)
def test_a_cards_commands_run_from_any_checkouts_root(env_id):
    """The commands that redo a training and a deployment name the agent's folder relative to the repository, not the machine's."""
    text = (folder(env_id) / "README.md").read_text()
    for section in (text.split("<!-- deployment:begin -->")[1], text.split("Command:")[1]):  # deployment, training
        commands = section.split("```")[1].strip().splitlines()[1:]  # after the fence's language
        assert commands and all(line.startswith(("spiking-dqn ", "python -m agents.")) for line in commands)
        assert all(" /" not in line for line in commands), commands
    assert env_id in text.split("<!-- deployment:begin -->")[1].split("```")[1]


def test_the_deployment_commands_show_paths_under_the_working_directory_relative(tmp_path, monkeypatch):
    from spiking_dqn.recipes.card import shown_command, shown_path

    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "agents" / "x" / "model.zip") == "agents/x/model.zip"
    assert shown_path(tmp_path.parent / "elsewhere model.zip") == f"'{tmp_path.parent / 'elsewhere model.zip'}'"
    recorded = f"spiking-dqn train X --seed 0 --qat-steps 0 --out {tmp_path / 'runs' / 'seed0'}"
    assert shown_command(recorded) == "spiking-dqn train X --seed 0 --qat-steps 0 --out runs/seed0"
    assert shown_command("(training command not recorded)") == "(training command not recorded)"
