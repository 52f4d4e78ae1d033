"""Threshold search: the two stages, resumable SQLite studies, bad inputs, backend failures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from spiking_dqn.hardware import EmulatorBackend
from spiking_dqn.rollouts import backend_reward
from spiking_dqn.search import (
    Evaluation,
    SearchInterrupted,
    StorageUnavailableError,
    apply_multipliers,
    best_evaluation,
    open_storage,
    threshold_search,
)

sys.path.insert(0, str(Path(__file__).parent))
from _search_worker import small_program, study_names  # noqa: E402

WORKER = Path(__file__).parent / "_search_worker.py"
ROOT = Path(__file__).resolve().parents[1]
STAGE1 = [0.5, 1.0, 2.0]
STAGE2 = [0.8, 1.25]  # no 1.0: stage-2 points never repeat a stage-1 point
ENV = "CartPole-v1"


class CountingBackend:
    """The emulator, counting calls and the distinct programs (threshold sets) it ran."""

    name = "emulator"

    def __init__(self, fail_after: int | None = None, override_actions: bool = False) -> None:
        self.inner = EmulatorBackend(warn_saturation=False)
        self.calls = 0
        self.inferences = 0
        self.programs: list[tuple] = []
        self.fail_after = fail_after
        self.override_actions = override_actions
        self._last = None

    def run(self, program, obs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise TimeoutError("chip stopped answering")
        if program is not self._last:
            self._last = program
            self.programs.append(tuple(round(float(np.mean(t)), 5) for t in program.thresholds[:-1]))
        result = self.inner.run(program, obs)
        self.inferences += result.batch_size
        if self.override_actions:
            result.actions = np.zeros_like(result.actions)
        return result


def complete_keys(storage: str, study_name: str) -> list[tuple]:
    study = optuna.load_study(study_name=study_name, storage=storage)
    return [
        tuple(sorted(t.params.items())) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    ]


def test_two_stages_on_a_small_grid(tmp_path):
    program = small_program()
    backend = CountingBackend()
    result = threshold_search(
        program, ENV, backend=backend, stage1_grid=STAGE1, stage2_factors=STAGE2, n_episodes=2,
        progress_bar=False, output_dir=tmp_path,
    )
    stage1 = [e for e in result.evaluations if e.stage == 1]
    stage2 = [e for e in result.evaluations if e.stage == 2]
    # Stage 1: one global multiplier on both hidden layers, every grid value once.
    assert sorted(e.multipliers[0] for e in stage1) == STAGE1
    assert all(e.multipliers[0] == e.multipliers[1] for e in stage1)
    assert result.stage1_best == min(stage1, key=lambda e: (-e.mean_reward, e.synaptic_events_per_inference))
    # Stage 2: per-layer multipliers on the fine grid around the stage-1 best (2 x 2 points).
    center = result.stage1_best.multipliers[0]
    expected = sorted((center * a, center * b) for a in STAGE2 for b in STAGE2)
    got = sorted(tuple(e.multipliers) for e in stage2)
    assert np.allclose(got, expected)
    assert result.best == best_evaluation(result.evaluations)
    # Every evaluation is the reward over the same k episodes on the backend.
    for e in result.evaluations:
        again = backend_reward(apply_multipliers(program, program, e.multipliers), ENV, 2, seed=0)
        assert again.mean_reward == e.mean_reward
        assert again.cost.inferences == e.inferences
    # Each of the 7 programs ran once, and the cost adds up.
    assert len(backend.programs) == len(set(backend.programs)) == 7
    assert result.backend_inferences == backend.inferences == sum(
        e.inferences for e in result.evaluations
    )
    assert result.backend_episodes == 7 * 2
    # The best program has the best thresholds, and the files are there.
    base = [float(np.mean(t)) for t in program.thresholds[:-1]]
    got = [float(np.mean(t)) for t in result.program.thresholds[:-1]]
    assert got == pytest.approx([b * m for b, m in zip(base, result.best.multipliers)], rel=1e-6)
    rows = pd.read_csv(tmp_path / "threshold_search.csv")
    assert len(rows) == 7 and rows["best"].sum() == 1
    data = json.loads((tmp_path / "threshold_search.json").read_text())
    assert data["best"]["multipliers"] == result.best.multipliers
    assert (tmp_path / "threshold_search.png").stat().st_size > 1000
    from spiking_dqn.hardware import ChipProgram

    assert ChipProgram.load(tmp_path / "best_program.npz") == result.program


def test_ties_go_to_fewer_synaptic_events():
    def ev(reward, events, m):
        return Evaluation(1, 0, [m], [m], reward, 0.0, 1, 10, events, 0.0, 0.0)

    evaluations = [ev(100.0, 500.0, 1.0), ev(100.0, 200.0, 2.0), ev(99.0, 10.0, 4.0)]
    assert best_evaluation(evaluations).multipliers == [2.0]
    # End to end: a backend whose actions never depend on the thresholds gives equal
    # rewards everywhere, so the point with the fewest synaptic events (the highest
    # thresholds) must win.
    result = threshold_search(
        small_program(), ENV, backend=CountingBackend(override_actions=True), stage1_grid=STAGE1,
        stage2_factors=STAGE2, n_episodes=1, progress_bar=False,
    )
    assert len({e.mean_reward for e in result.evaluations}) == 1
    assert result.stage1_best.multipliers[0] == max(STAGE1)
    fewest = min(e.synaptic_events_per_inference for e in result.evaluations)
    assert result.best.synaptic_events_per_inference == fewest


@pytest.mark.parametrize(
    "stage1, stage2",
    [([], STAGE2), ([0.0, 1.0], STAGE2), ([-1.0], STAGE2), ([math.nan], STAGE2), ([math.inf], STAGE2),
     (STAGE1, []), (STAGE1, [0.0]), (None, STAGE2), ("1,2", STAGE2)],
)
def test_empty_or_non_positive_grid_is_a_value_error(stage1, stage2):
    backend = CountingBackend()
    with pytest.raises(ValueError, match="stage"):
        threshold_search(small_program(), ENV, backend=backend, stage1_grid=stage1, stage2_factors=stage2,
                         progress_bar=False)
    assert backend.calls == 0


def test_non_positive_episodes_is_a_value_error():
    with pytest.raises(ValueError, match="n_episodes"):
        threshold_search(small_program(), ENV, backend=CountingBackend(), n_episodes=0, progress_bar=False)


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgresql://user@127.0.0.1:1/db", ["cannot reach", "127.0.0.1:1"]),
        ("postgresql://user:secret@127.0.0.1:1/db", ["cannot reach", "***"]),
        ("definitely not a url", ["invalid storage URL"]),
        ("nosuchdialect://x/y", ["storage"]),
    ],
)
def test_unreachable_storage_fails_before_any_work(url, words):
    backend = CountingBackend()
    with pytest.raises(StorageUnavailableError) as info:
        threshold_search(small_program(), ENV, backend=backend, stage1_grid=STAGE1, stage2_factors=STAGE2,
                         storage=url, progress_bar=False)
    message = str(info.value)
    for word in words:
        assert word in message
    assert "secret" not in message
    assert backend.calls == 0


@pytest.mark.parametrize(
    "url, scheme", [("bogus://", "bogus"), ("postgresql+nosuchdriver://h/db", "postgresql+nosuchdriver")]
)
def test_unknown_storage_scheme_is_named_with_the_supported_forms(url, scheme):
    with pytest.raises(StorageUnavailableError) as info:
        open_storage(url)
    message = str(info.value)
    assert f"unknown URL scheme {scheme!r}" in message
    assert "sqlite:///" in message and "postgresql://" in message
    assert "server is running" not in message


def test_backend_failure_keeps_finished_evaluations_and_says_how_to_resume(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    probe = CountingBackend()
    threshold_search(small_program(), ENV, backend=probe, stage1_grid=STAGE1, stage2_factors=STAGE2,
                     n_episodes=2, progress_bar=False)
    # Fail in the middle of stage 1 (a fifth of the whole search's backend calls).
    failing = CountingBackend(fail_after=probe.calls // 5)
    with pytest.raises(SearchInterrupted) as info:
        threshold_search(small_program(), ENV, backend=failing, stage1_grid=STAGE1, stage2_factors=STAGE2,
                         n_episodes=2, storage=storage, study_name="s", progress_bar=False)
    err = info.value
    assert "chip stopped answering" in str(err) and "resume" in str(err) and storage in str(err)
    assert isinstance(err.__cause__, TimeoutError)
    assert err.study_name == study_names("s")[0]
    study = optuna.load_study(study_name=err.study_name, storage=storage)
    states = [t.state for t in study.get_trials()]
    finished = states.count(optuna.trial.TrialState.COMPLETE)
    assert finished == err.n_finished >= 1
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.RUNNING not in states
    # Running it again resumes: the finished evaluations are not repeated.
    again = CountingBackend()
    result = threshold_search(small_program(), ENV, backend=again, stage1_grid=STAGE1, stage2_factors=STAGE2,
                              n_episodes=2, storage=storage, study_name="s", progress_bar=False)
    assert result.evaluated_here == 3 + 4 - finished
    assert len(again.programs) == len(set(again.programs)) == result.evaluated_here
    stage1, stage2 = result.study_names
    assert sorted(complete_keys(storage, stage1)) == sorted(set(complete_keys(storage, stage1)))
    assert len(complete_keys(storage, stage1)) == 3 and len(complete_keys(storage, stage2)) == 4


def test_backend_failure_in_memory_points_to_a_database_storage():
    with pytest.raises(SearchInterrupted, match="sqlite:///search.db"):
        threshold_search(small_program(), ENV, backend=CountingBackend(fail_after=3), stage1_grid=STAGE1,
                         stage2_factors=STAGE2, progress_bar=False)


def test_another_program_searches_again_and_another_search_of_the_same_program_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    options = dict(stage1_grid=[1.0], stage2_factors=[1.0], storage=storage, study_name="x", progress_bar=False)
    first = threshold_search(small_program(0), ENV, n_episodes=1, **options)
    assert first.study_names == study_names("x", 0) and first.evaluated_here == 2
    other = threshold_search(small_program(1), ENV, n_episodes=1, **options)  # its own studies, evaluated
    assert other.study_names == study_names("x", 1) != first.study_names and other.evaluated_here == 2
    assert threshold_search(small_program(0), ENV, n_episodes=1, **options).evaluated_here == 0  # resumed
    with pytest.raises(ValueError, match="different search"):
        threshold_search(small_program(0), ENV, n_episodes=2, **options)


@pytest.mark.slow  # a worker process, a heartbeat timeout and three searches: several seconds
def test_resume_after_a_killed_sqlite_search(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    probe = CountingBackend()
    threshold_search(small_program(), ENV, backend=probe, stage1_grid=STAGE1, stage2_factors=STAGE2, n_episodes=2,
                     progress_bar=False)
    # Kill the worker in the middle of an evaluation, after about half of the calls.
    cfg = dict(storage=storage, study_name="kill", stage1=STAGE1, stage2=STAGE2, episodes=2,
               exit_after=probe.calls // 2, heartbeat_interval=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(WORKER), json.dumps(cfg)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 17, proc.stderr[-2000:]
    names = study_names("kill")
    trials = {
        stage: optuna.load_study(study_name=names[stage - 1], storage=storage).get_trials()
        for stage in (1, 2)
        if names[stage - 1] in optuna.get_all_study_names(storage)
    }
    done_before = {
        (stage, tuple(sorted(t.params.items()))): t.user_attrs["worker"]
        for stage, ts in trials.items()
        for t in ts
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    running = [t for ts in trials.values() for t in ts if t.state == optuna.trial.TrialState.RUNNING]
    assert 1 <= len(done_before) < 7 and len(running) == 1  # one evaluation was cut off
    # Run it again in this process: it waits for the dead worker's trial to go stale
    # (heartbeat 1 s), redoes that point and the missing ones, and nothing else.
    again = CountingBackend()
    result = threshold_search(small_program(), ENV, backend=again, stage1_grid=STAGE1, stage2_factors=STAGE2,
                              n_episodes=2, storage=storage, study_name="kill", heartbeat_interval=1,
                              progress_bar=False)
    assert result.evaluated_here == 7 - len(done_before)
    assert len(again.programs) == len(set(again.programs)) == result.evaluated_here
    for stage, n in ((1, 3), (2, 4)):
        keys = complete_keys(storage, names[stage - 1])
        assert len(keys) == len(set(keys)) == n  # each grid point finished exactly once
    study1 = optuna.load_study(study_name=names[0], storage=storage)
    for t in study1.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        key = (1, tuple(sorted(t.params.items())))
        if key in done_before:
            assert t.user_attrs["worker"] == done_before[key]  # kept, not re-evaluated
    assert optuna.trial.TrialState.FAIL in [t.state for ts in trials.values() for t in ts] or any(
        t.state == optuna.trial.TrialState.FAIL
        for s in names
        for t in optuna.load_study(study_name=s, storage=storage).get_trials()
    )
    reference = threshold_search(small_program(), ENV, stage1_grid=STAGE1, stage2_factors=STAGE2, n_episodes=2,
                                 progress_bar=False)
    assert result.best.multipliers == reference.best.multipliers
    assert result.best.mean_reward == reference.best.mean_reward


def test_a_trial_abandoned_before_its_first_heartbeat_is_taken_over(tmp_path):
    from spiking_dqn.search.studies import open_study, run_grid

    storage = open_storage(f"sqlite:///{tmp_path / 'abandoned.db'}", heartbeat_interval=1)
    points = [{"x": 1.0}, {"x": 2.0}]
    study = open_study(storage, "abandoned", points, "fp", {})
    study.enqueue_trial({"x": 1.0})
    with pytest.warns(UserWarning, match="Heartbeat"):
        abandoned = study.ask()  # RUNNING, no heartbeat, never evaluated: its worker "died" here
    abandoned.suggest_float("x", 1.0, 2.0)
    seen = []
    complete = run_grid(study, points, lambda p: (seen.append(p["x"]) or p["x"], {}), poll_interval=0.1,
                        unclaimed_timeout=1.0)
    assert sorted(seen) == [1.0, 2.0] and len(complete) == 2
    states = {t.number: t.state for t in study.get_trials()}
    assert states[abandoned.number] == optuna.trial.TrialState.FAIL
