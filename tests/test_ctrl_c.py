"""Ctrl-C in ``spiking-dqn demo`` and in the recipes ``python -m agents.cartpole``/``agents.acrobot`` ends as in
``spiking-dqn train`` (tests/test_train_resume.py): one line naming the command that resumes, exit 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spiking_dqn.recipes.run_folder import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]
#: A training with checkpoints from step 256 on (as tests/test_train_resume.py's) that outlasts the interrupt:
#: 100,000 steps. A short one could end between the test's look at its checkpoint and the signal (a CI run once
#: saw a 4,500-step one end on its own, no line printed); a run left behind by a killed pytest still ends in minutes.
SHORT = ["--timesteps", "100000", "--checkpoint-freq", "256", "--eval-freq", "200", "--select-episodes", "2",
         "--eval-episodes", "2", "--qat-steps", "0", "--net-arch", "16", "--ticks", "4"]


def _interrupt(module: str, args: list[str], started: Path) -> tuple[int, str]:
    """Run ``python -m module args``, send SIGINT once ``started`` exists; its exit status and last line of stderr.

    (CartPole-v0's recipe also writes Gymnasium's deprecation notice, once, before.)
    """
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not started.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ended = run.poll()
    if ended is not None or not started.exists():
        if ended is None:
            run.kill()
        _, err = run.communicate(timeout=120)
        why = f"ended (exit {ended})" if ended is not None else "had not written it after 120 s"
        pytest.fail(f"no interrupt sent: the run {why} before {started.name} appeared; its stderr:\n{err}")
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("interrupted; "), f"exit {run.returncode}: {err}"
    assert sum("interrupted" in line for line in lines) == 1, err
    return run.returncode, lines[-1]


@pytest.mark.parametrize("recipe", ["agents.cartpole", "agents.acrobot"])
def test_ctrl_c_in_a_recipe_names_its_resume_command(tmp_path, recipe):
    out = tmp_path / "run"
    code, err = _interrupt(recipe, [*SHORT, "--out", str(out), "--no-progress"], out / CHECKPOINT_NAME)
    assert code == 130, err
    assert err.startswith("interrupted; the training checkpoint at step "), err
    assert f"python -m {recipe} " in err and err.endswith(" --resume")


def test_ctrl_c_in_the_demo_says_how_to_go_on(tmp_path):
    out = tmp_path / "demo"
    # Training has started once SB3 has made its TensorBoard run folder in out/tb.
    code, err = _interrupt("spiking_dqn.cli", ["demo", "--env", "CartPole-v1", "--timesteps", "100000", "--episodes",
                                               "2", "--qat-steps", "0", "--out", str(out)], out / "tb")
    assert code == 130, err
    assert err.startswith("interrupted; "), err
    assert "spiking-dqn demo" in err or "run the same command again" in err


def _numba_interrupt(*args, **kwargs):
    """What numba raises when a Ctrl-C arrives while a compiled function's first call loads its cached code."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        raise SystemError("CPUDispatcher(<function f>) returned a result with an exception set") from interrupt


def test_a_ctrl_c_that_numba_wrapped_ends_as_a_ctrl_c(tmp_path, monkeypatch, capsys):
    from spiking_dqn.cli import main
    from spiking_dqn.cli import train as train_cli

    monkeypatch.setattr(train_cli, "train_env", _numba_interrupt)
    assert main(["train", "CartPole-v0", "--timesteps", "500", "--out", str(tmp_path / "run")]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("interrupted; ") and "Traceback" not in "\n".join(lines)


def test_a_system_error_that_is_no_ctrl_c_is_not_taken_for_one(tmp_path, monkeypatch, capsys):
    from spiking_dqn.cli import main
    from spiking_dqn.cli import train as train_cli

    def broken(*args, **kwargs):
        raise SystemError("a real bug")

    monkeypatch.setattr(train_cli, "train_env", broken)
    try:
        code = main(["train", "CartPole-v0", "--timesteps", "500", "--out", str(tmp_path / "run")])
    except SystemError:
        code = None  # raised on: not a Ctrl-C
    assert code != 130 and "interrupted; " not in capsys.readouterr().err


HALF_BUILT_BAR = """
from tqdm.rich import tqdm
from spiking_dqn.cli.arguments import interrupted

class Half(tqdm):
    def __init__(self):  # stopped before tqdm set its attributes, as a Ctrl-C inside its __init__ leaves a bar
        raise KeyboardInterrupt

try:
    Half()
except KeyboardInterrupt:
    raise SystemExit(interrupted("test"))
"""


def test_a_bar_the_ctrl_c_stopped_halfway_through_its_init_prints_no_traceback():
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", HALF_BUILT_BAR], cwd=ROOT, text=True,
                         capture_output=True, timeout=120)
    assert run.returncode == 130 and run.stderr.strip() == "interrupted; test", run.stderr
