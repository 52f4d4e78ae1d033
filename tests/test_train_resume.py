"""``spiking-dqn train`` survives Ctrl-C and kills: checkpoints, ``--resume``, atomic files, one run per folder.

What is identical after ``--resume`` (tested here on CartPole-v1 with training updates, periodic
evaluations, ``--reselect`` and the final evaluation): the weights of ``model_trained.zip`` and
``model.zip`` (the optimizer's state too), the periodic evaluations of ``evaluations.npz`` and
the models replayed by ``--reselect``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn.cli import main
from spiking_dqn.files import PARTIAL_MARK, atomic_write, atomic_write_text
from spiking_dqn.recipes.recipe import TRAINING_FILES
from spiking_dqn.recipes.run_folder import CHECKPOINT_NAME, RecipeEvalCallback, TrainingCheckpoint, move_previous_run

ROOT = Path(__file__).resolve().parents[1]
#: A run with gradient updates (learning_starts 1000, train_freq 256), checkpoints, and evaluations from before
#: the first checkpoint on (so that the best-so-far a checkpoint keeps matters).
RUN = ["train", "CartPole-v1", "--timesteps", "4500", "--checkpoint-freq", "256", "--eval-freq", "200",
       "--select-episodes", "2", "--reselect", "3", "--eval-episodes", "2", "--qat-steps", "0", "--net-arch", "16",
       "--ticks", "4"]


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-m", "spiking_dqn.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _equal(a, b) -> bool:
    if isinstance(a, th.Tensor):
        return th.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_ctrl_c_then_resume_gives_the_uninterrupted_run(tmp_path):
    interrupted, whole = tmp_path / "interrupted", tmp_path / "whole"
    run = _cli([*RUN, "--out", str(interrupted)])
    reference = _cli([*RUN, "--out", str(whole), "--no-progress"])  # meanwhile, on the other core
    deadline = time.monotonic() + 120
    while not (interrupted / CHECKPOINT_NAME).exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("interrupted; the training checkpoint at step ") and err.strip().endswith("--resume")
    assert not (interrupted / "model_trained.zip").exists() and not (interrupted / "model.zip").exists()

    # Another budget is refused (the checkpoint records the run's settings); --qat-only says to resume.
    out = str(interrupted)
    assert main([*RUN[:3], "5000", *RUN[4:], "--out", out, "--resume"]) == 2
    assert main([*RUN, "--out", out, "--qat-only"]) == 2

    resumed = _cli([*RUN, "--out", out, "--resume", "--no-progress"])
    resumed_out, resumed_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, resumed_err
    assert "resuming from the checkpoint at step" in resumed_out
    assert reference.wait(timeout=300) == 0
    assert not (interrupted / CHECKPOINT_NAME).exists()  # deleted once training finished

    summary = json.loads((interrupted / "eval.json").read_text())
    assert summary["timesteps"] == 4500 and summary["resumed_at"][0] >= 256
    for name in ("model_trained.zip", "model.zip"):
        a, b = DQN.load(interrupted / name).get_parameters(), DQN.load(whole / name).get_parameters()
        assert _equal(a, b), name  # weights and optimizer state
    for key in ("timesteps", "results", "ep_lengths"):
        assert np.array_equal(np.load(interrupted / "evaluations.npz")[key], np.load(whole / "evaluations.npz")[key])
    assert summary["mean_reward"] == json.loads((whole / "eval.json").read_text())["mean_reward"]
    # the checkpoint kept the three best evaluations' models: the same ones replayed, the same one kept
    assert summary["reselection"] == json.loads((whole / "eval.json").read_text())["reselection"]
    assert len(summary["reselection"]["candidates"]) == 3


def test_resume_and_qat_only_say_what_is_missing(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*RUN, "--out", out, "--resume"]) == 2
    assert "no training checkpoint" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"an interrupted run")
    assert main([*RUN, "--out", out, "--qat-only"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*RUN, "--out", out, "--resume"]) == 2
    assert "cannot read the training checkpoint" in capsys.readouterr().err


def test_a_failed_write_keeps_the_previous_complete_file(tmp_path):
    path = tmp_path / "eval.json"
    atomic_write_text(path, "complete\n")
    with pytest.raises(OSError, match="disk full"), atomic_write(path) as tmp:
        tmp.write_text("half of a ne")
        raise OSError("disk full")
    assert path.read_text() == "complete\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left

    def save_then_fail(self, target, *args, **kwargs):  # an SB3 save that dies midway
        Path(target).write_bytes(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    model = tmp_path / "model.zip"
    model.write_bytes(b"the previous model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DQN, "save", save_then_fail)
        with pytest.raises(KeyboardInterrupt), atomic_write(model) as tmp:
            DQN.save(None, tmp)
    assert model.read_bytes() == b"the previous model"
    assert not list(tmp_path.glob(f"*{PARTIAL_MARK}*"))


def test_retraining_moves_the_stale_outputs_aside(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "compare").mkdir(parents=True)
    stale = ["model.zip", "model_trained.zip", "eval.json", "README.md", "chip_program.npz", "model.nir",
             "evaluations.npz", f".model.1234{PARTIAL_MARK}.zip"]
    for name in stale:
        (out / name).write_text("from the earlier run")
    (out / "compare" / "report.md").write_text("stale")
    args = ["train", "CartPole-v1", "--timesteps", "300", "--eval-freq", "200", "--select-episodes", "1",
            "--eval-episodes", "1", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("torch threads: ")  # the thread count the package chose, once, first
    assert text.count("torch threads: ") == 1
    moved = [line for line in text.splitlines() if "held an earlier run" in line]
    assert len(moved) == 1
    previous = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(previous) == 1 and str(previous[0]) in moved[0]
    names = {p.name for p in out.iterdir()} - {previous[0].name}
    assert names == {"model.zip", "model_trained.zip", "eval.json", "README.md", "evaluations.npz",
                     "reward_curve.png", "training.json", "run.json"}
    assert {p.name for p in previous[0].iterdir()} == set(stale[:-1]) | {"compare"}
    for name in ("model.zip", "eval.json"):
        assert (out / name).read_bytes() != b"from the earlier run"


def test_qat_only_keeps_the_training_and_moves_what_the_old_model_made(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model_trained.zip", "eval.json", "evaluations.npz", "model.zip", "chip_program.npz"):
        (out / name).write_text(name)
    message = move_previous_run(out, keep=TRAINING_FILES)
    assert message is not None and "2 file(s)" in message
    assert {p.name for p in out.iterdir() if not p.name.startswith("previous-")} == {
        "model_trained.zip", "eval.json", "evaluations.npz", "run.json"}  # run.json: a run not finished
    assert move_previous_run(tmp_path / "run", keep=TRAINING_FILES) is None


def test_qat_only_after_an_interrupted_fine_tuning_has_the_training_record(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "CartPole-v1", "--timesteps", "300", "--eval-freq", "200", "--select-episodes", "1",
            "--eval-episodes", "1", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    (out / "eval.json").unlink()  # as after a Ctrl-C during the fine-tuning or the final evaluation
    assert main([*args, "--out", str(out), "--qat-only"]) == 0
    summary = json.loads((out / "eval.json").read_text())
    assert summary["timesteps"] == 300 and summary["command"] == shlex.join(["spiking-dqn", *args, "--out", str(out)])
    assert "--qat-only" not in summary["command"]


def test_a_run_whose_env_cannot_be_pickled_trains_without_checkpoints(tmp_path):
    import threading

    from envs import make_vec
    from spiking_dqn import SpikingDQN, SpikingDQNPolicy

    env = make_vec("CartPole-v1", seed=0)
    env.envs[0].unwrapped.lock = threading.Lock()
    model = SpikingDQN(SpikingDQNPolicy, env, learning_starts=100, policy_kwargs=dict(net_arch=[8], ticks=4), seed=0)
    evaluation = RecipeEvalCallback(make_vec("CartPole-v1", seed=1), tmp_path, n_eval_episodes=1, eval_freq=10**6)
    checkpoint = TrainingCheckpoint(tmp_path / CHECKPOINT_NAME, 64, [evaluation], evaluation, {})
    with pytest.warns(RuntimeWarning, match="checkpoints are off"):
        model.learn(300, callback=[evaluation, checkpoint])
    assert model.num_timesteps == 300 and not list(tmp_path.iterdir())
