"""The main job (`make demo`) end to end, on a tiny budget, and the recipes' QAT-only mode."""

import json

import pytest

from spiking_dqn.cli import main
from spiking_dqn.cli.demo import DEFAULT_OUT


def test_demo_writes_under_runs_by_default():
    assert DEFAULT_OUT.parts[0] == "runs"


@pytest.mark.slow
def test_demo_trains_deploys_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--timesteps", "1200", "--episodes", "2", "--qat-steps", "300", "--out", str(out)]) == 0
    for name in ["model.zip", "model_trained.zip", "README.md", "eval.json", "chip_program.npz", "deployment.json"]:
        assert (out / name).exists(), name
    for name in ["report.json", "report.md", "reward.png", "spike_raster.png"]:
        assert (out / "deployment" / name).exists(), name
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    record = json.loads((out / "deployment.json").read_text())
    card = json.loads((out / "eval.json").read_text())
    # The recipe's QAT grid travels with model.zip: the chip program is quantized with it.
    lambdas = [layer["lam"] for layer in record["quantization"]["layers"]]
    assert lambdas == pytest.approx(card["qat"]["lambdas"], rel=1e-6)
    assert card["qat"]["steps"] == 300
    report = json.loads((out / "deployment" / "report.json").read_text())
    assert record["figures"]["action_agreement"] == report["action_agreement"]["value"]
    assert record["figures"]["chip_reward"] == report["reward"]["chip"]["mean"]["value"]
    assert "trained_agent_action_agreement" in record["figures"]
    printed = capsys.readouterr().out
    assert "on the emulated chip (int8): mean reward" in printed
    assert "float and chip on the same 2 deterministic episodes (env seeds 0..1)" in printed
    float_line = next(line for line in printed.splitlines() if "after quantization-aware fine-tuning" in line)
    assert float_line.endswith(f"{record['figures']['float_reward']:.1f}")  # the comparison's episodes, not eval.json's
    assert '"float_reward"' not in printed  # a readable summary, not a raw JSON dict
    card = (out / "README.md").read_text()
    assert f"spiking-dqn deploy {out / 'model.zip'}" in card and "agents.deploy" not in card


@pytest.mark.parametrize("qat", [True, False])
def test_demo_summary_puts_float_and_chip_figures_of_the_same_episodes_side_by_side(capsys, qat):
    from spiking_dqn.cli.demo import print_summary

    training = {"timesteps": 1000, "train_wall_time_s": 12.0, "mean_reward": 111.0, "trained_mean_reward": 77.0,
                "eval_seed": 12345}
    figures = {"float_reward": 200.0, "chip_reward": 199.0, "action_agreement": 0.99}
    if qat:
        figures.update(trained_agent_float_reward=150.0, trained_agent_action_agreement=0.9)
    print_summary("CartPole-v0", training, figures, episodes=20, seed=0)
    printed = capsys.readouterr().out
    assert "same 20 deterministic episodes (env seeds 0..19)" in printed
    assert "200.0" in printed and "199.0" in printed and "111.0" not in printed and "77.0" not in printed
    assert ("before QAT" in printed) == qat and ("150.0" in printed) == qat


@pytest.mark.slow
def test_recipe_qat_only_fine_tunes_the_agent_as_trained(tmp_path, monkeypatch):
    from stable_baselines3 import DQN

    from agents import cartpole

    out = tmp_path / "cp"
    monkeypatch.setattr(cartpole, "command_line", lambda module: "first")
    first = cartpole.main(["--timesteps", "800", "--out", str(out), "--eval-episodes", "2", "--qat-steps", "0",
                           "--no-progress", "--eval-freq", "400"])
    assert first["qat"] is None and first["mean_reward"] == first["trained_mean_reward"]
    assert DQN.load(out / "model.zip").policy.q_net.q_net.grid is None
    assert "train_wall_time_remeasured" not in first
    # A note added to eval.json later (as on the shipped cards) survives the fine-tuning.
    remeasured = {"wall_time_s": 1.0, "date": "today", "why": "a test", "machine": "here", "mean_reward": 20.0,
                  "eval_episodes": 2, "command": "again"}
    (out / "eval.json").write_text(json.dumps({**first, "train_wall_time_remeasured": remeasured}))

    monkeypatch.setattr(cartpole, "command_line", lambda module: "second")
    second = cartpole.main(["--timesteps", "800", "--out", str(out), "--eval-episodes", "2", "--qat-steps", "200",
                            "--qat-only"])
    assert second["timesteps"] == 800 and second["train_wall_time_s"] == first["train_wall_time_s"]
    assert second["command"] == "first" and second["qat"]["command"] == "second"
    net = DQN.load(out / "model.zip").policy.q_net.q_net
    assert list(net.grid.lambdas) == pytest.approx(second["qat"]["lambdas"], rel=1e-6)
    assert "quantization-aware fine-tuning: 200 gradient steps of distillation" in (out / "README.md").read_text()
    assert second["train_wall_time_remeasured"] == remeasured
    assert "training wall time re-measured on today (a test): 1.0 s" in (out / "README.md").read_text()


def test_recipe_qat_only_needs_the_agent_as_trained(tmp_path, capsys):
    from agents.common import parse_args

    with pytest.raises(SystemExit):
        parse_args("CartPole-v0", 800, ["--out", str(tmp_path), "--qat-only"])
    assert "model_trained.zip does not exist" in capsys.readouterr().err
