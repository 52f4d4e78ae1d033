"""A training folder never mixes two runs (issue 27): ``spiking-dqn train`` killed or out of disk at any point.

Run A (seed 1) is complete in the folder; run B (seed 2) is started over it and faulted at the
Nth file step (:mod:`_train_faults`: every rename into the folder, the moves of run A aside
and each atomic write of run B) or at a seeded moment. Afterwards the folder, and each
``previous-*`` folder A was moved to, is either refused by the loaders of ``spiking-dqn``
(one line) or loads with every run file from one run: all A's, or all new.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from _train_faults import Killed, install
from spiking_dqn.cli import CLIError, main
from spiking_dqn.cli.loading import load_spiking_model, require_env_id

ROOT = Path(__file__).resolve().parents[1]
SEED = 27
#: Seeded file steps faulted in-process (a kill's stand-in), and with ENOSPC.
FAST_KILL_STEPS = 5
FAST_FULL_DISK_STEPS = 2
#: Seeded file steps at which a real process is SIGKILLed, and seeded moments (slow test).
SLOW_KILL_STEPS = 6
SLOW_KILL_TIMES = 3
#: The files of a run the check compares (the card and plots are not read by the loaders).
RUN_FILES = ("model.zip", "model_trained.zip", "eval.json", "training.json", "evaluations.npz")
TRAIN = ["train", "CartPole-v1", "--timesteps", "300", "--eval-freq", "200", "--select-episodes", "1",
         "--eval-episodes", "1", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]


def _files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RUN_FILES if (folder / name).is_file()}


def _check(folder: Path, previous: dict[str, bytes]) -> str:
    """``"refused"``, ``"previous"`` or ``"new"``: what the loaders make of ``folder`` (never a mix)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            require_env_id(None, folder / "model.zip")
            load_spiking_model(folder / "model.zip")
    except CLIError as exc:
        assert "\n" not in str(exc), str(exc)
        return "refused"
    assert not [w for w in caught if "run manifests" in str(w.message)]  # folders of this version have one
    files = _files(folder)
    same = [name for name in files if files[name] == previous.get(name)]
    assert same == list(files) or not same, f"{folder} mixes two runs: {same} of the previous one, not {files.keys()}"
    return "previous" if same else "new"


def _check_all(out: Path, previous: dict[str, bytes]) -> list[str]:
    """:func:`_check` of ``out`` and of every ``previous-*`` folder in it; the previous run is never lost."""
    states = [_check(out, previous)]
    for folder in sorted(out.glob("previous-*")):
        states.append(_check(folder, previous))
    return states


def _steps(out: Path) -> int:
    """File steps of run B over a complete run A (counted on a copy)."""
    count, remove = install(out, 0, "raise")
    try:
        assert main([*TRAIN, "--seed", "2", "--out", str(out)]) == 0
    finally:
        remove()
    return count[0]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], int]:
    """Run A complete in a folder, its files, and the file steps of run B over it."""
    first = tmp_path_factory.mktemp("train_kill") / "first"
    assert main([*TRAIN, "--seed", "1", "--out", str(first)]) == 0
    assert _check(first, {}) == "new"
    counted = first.parent / "counted"
    shutil.copytree(first, counted)
    total = _steps(counted)
    assert total >= 10  # the moves, the run's writes, the manifest
    assert _check_all(counted, _files(first)) == ["new", "previous"]
    return first, _files(first), total


def _after_rerun(out: Path, previous: dict[str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    """Run B again in a faulted folder: it completes, and run A is whole in one ``previous-*`` folder."""
    assert main([*TRAIN, "--seed", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    states = _check_all(out, previous)
    assert states[0] == "new" and states[1:].count("previous") == 1, states


def test_a_run_killed_at_seeded_file_steps_leaves_one_run_or_is_refused(run_a, tmp_path, capsys):
    first, previous, total = run_a
    rng = random.Random(SEED)
    steps = sorted({1, total, *rng.sample(range(2, total), FAST_KILL_STEPS - 2)})
    seen = set()
    for step in steps:
        out = tmp_path / f"step{step}"
        shutil.copytree(first, out)
        _, remove = install(out, step, "raise")
        try:
            with pytest.raises(Killed):
                main([*TRAIN, "--seed", "2", "--out", str(out)])
        finally:
            remove()
        capsys.readouterr()
        states = _check_all(out, previous)
        assert states[0] in ("previous", "refused") and "new" not in states, (step, states)
        seen.add(states[0])
        _after_rerun(out, previous, capsys)
    assert seen == {"previous", "refused"}  # before the new manifest, A; after it, refused until B is complete


def test_a_full_disk_during_train_ends_in_one_line_and_exit_1(run_a, tmp_path, capsys):
    first, previous, total = run_a
    rng = random.Random(SEED + 1)
    for step in sorted(rng.sample(range(1, total + 1), FAST_FULL_DISK_STEPS)):
        out = tmp_path / f"full{step}"
        shutil.copytree(first, out)
        _, remove = install(out, step, "enospc")
        try:
            code = main([*TRAIN, "--seed", "2", "--out", str(out)])
        finally:
            remove()
        err = capsys.readouterr().err
        assert code == 1, (step, err)
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and lines[0].startswith("error: no space left on the device"), err
        states = _check_all(out, previous)
        assert states[0] in ("previous", "refused") and "new" not in states, (step, states)
        _after_rerun(out, previous, capsys)


def _cli(out: Path, step: int, count_file: Path) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "_train_faults.py"), str(out), str(step), "kill", str(count_file),
            *TRAIN, "--seed", "2", "--out", str(out)]


@pytest.mark.slow
def test_train_sigkilled_at_seeded_steps_and_moments_leaves_one_run_or_is_refused(run_a, tmp_path, capsys):
    first, previous, _ = run_a
    counted = tmp_path / "counted"
    shutil.copytree(first, counted)
    count_file = tmp_path / "count"
    start = time.monotonic()
    subprocess.run(_cli(counted, 0, count_file), cwd=ROOT, check=True, capture_output=True, timeout=300)
    run_time = time.monotonic() - start
    total = int(count_file.read_text())
    assert _check(counted, previous) == "new"
    rng = random.Random(SEED)
    points = [("step", step) for step in sorted(rng.sample(range(1, total + 1), SLOW_KILL_STEPS))]
    points += [("time", rng.uniform(0.3, 1.0) * run_time) for _ in range(SLOW_KILL_TIMES)]
    for n, (how, at) in enumerate(points):
        out = tmp_path / f"kill{n}"
        shutil.copytree(first, out)
        if how == "step":
            proc = subprocess.run(_cli(out, int(at), count_file), cwd=ROOT, capture_output=True, timeout=300)
            assert proc.returncode == -signal.SIGKILL, (at, proc.stderr[-2000:])
        else:
            proc = subprocess.Popen(_cli(out, 0, count_file), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        states = _check_all(out, previous)
        assert states[0] in ("previous", "refused", "new") and "new" not in states[1:], (how, at, states)
        if states[0] != "new":
            _after_rerun(out, previous, capsys)
