"""``spiking-dqn train ENV --hyperparams FILE``: the entry of a user's rl-zoo style file (e.g. ``tune --export``'s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rl_zoo3.utils import SimpleLinearSchedule
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQN, SpikingDQNPolicy
from spiking_dqn.cli import main

ENTRY = """\
# tuned for a tiny budget
CartPole-v0:
  n_timesteps: 300
  policy: 'spiking_dqn.SpikingDQNPolicy'
  learning_starts: 0
  buffer_size: 1000
  policy_kwargs: "dict(net_arch=[16], ticks=4)"
"""


def test_train_uses_the_files_entry_and_its_timesteps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "tuned.yml", tmp_path / "run"
    path.write_text(ENTRY)
    assert main(["train", "CartPole-v0", "--hyperparams", str(path), "--qat-steps", "0", "--eval-episodes", "1",
                 "--no-progress", "--out", str(out)]) == 0
    assert f"hyperparameters from the CartPole-v0 entry of {path}" in capsys.readouterr().out
    record = json.loads((out / "eval.json").read_text())
    assert record["timesteps"] == 300 and "--hyperparams" in record["command"]
    config = DQN.load(out / "model_trained.zip", device="cpu").policy.spiking_config
    assert list(config.net_arch) == [16] and config.ticks == 4


@pytest.mark.parametrize("text, message", [
    (None, "cannot read hyperparameter file"),
    ("- a list\n", "is not an rl-zoo hyperparameter file"),
    ("CartPole-v0: [\n", "cannot read hyperparameter file"),
    (ENTRY.replace("CartPole-v0:", "Acrobot-v1:"), "has no entry for 'CartPole-v0'; entries: Acrobot-v1"),
    (ENTRY + "  n_envs: 4\n", "keys that are not DQN arguments: n_envs"),
    (ENTRY.replace("  n_timesteps: 300\n", ""), "the CartPole-v0 entry has no n_timesteps"),
    (ENTRY.replace("spiking_dqn.SpikingDQNPolicy", "MlpPolicy"), "policy must be 'spiking_dqn.SpikingDQNPolicy'"),
    (ENTRY + "  learning_rate: exp_1e-3\n", "learning_rate 'exp_1e-3': give a positive number or rl-zoo's linear"),
    (ENTRY + "  learning_rate: lin_-1e-3\n", "learning_rate 'lin_-1e-3': give a positive number"),
])
def test_an_unusable_file_is_one_line(text: str | None, message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tuned.yml"
    if text is not None:
        path.write_text(text)
    assert main(["train", "CartPole-v0", "--hyperparams", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_rl_zoos_linear_learning_rate_trains_and_fine_tunes(tmp_path: Path) -> None:
    """``learning_rate: lin_1e-3`` (rl-zoo's schedule string) falls as rl-zoo's own schedule does, is saved with the
    model, and the fine-tuning, whose default rate is the training's final one (here 0), takes a tenth of the first."""
    path, out = tmp_path / "tuned.yml", tmp_path / "run"
    path.write_text(ENTRY + "  learning_rate: lin_1e-3\n")
    assert main(["train", "CartPole-v0", "--hyperparams", str(path), "--qat-steps", "20", "--eval-episodes", "1",
                 "--no-progress", "--out", str(out)]) == 0
    schedule, zoo = DQN.load(out / "model_trained.zip", device="cpu").lr_schedule, SimpleLinearSchedule(1e-3)
    assert [schedule(p) for p in (1.0, 0.5, 0.0)] == pytest.approx([zoo(p) for p in (1.0, 0.5, 0.0)])
    record = json.loads((out / "eval.json").read_text())
    assert record["qat"]["learning_rate"] == pytest.approx(1e-4)
    assert json.loads((out / "run.json").read_text())["complete"]


def test_spiking_dqn_takes_the_schedule_string_itself() -> None:
    model = SpikingDQN(SpikingDQNPolicy, "CartPole-v1", learning_rate="lin_5e-4",
                       policy_kwargs=dict(net_arch=[8], ticks=4))
    assert model.lr_schedule(0.25) == pytest.approx(1.25e-4)
    with pytest.raises(ValueError, match="lin_<positive number>"):
        SpikingDQN(SpikingDQNPolicy, "CartPole-v1", learning_rate="fast", policy_kwargs=dict(net_arch=[8], ticks=4))
