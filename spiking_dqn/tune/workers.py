"""The tuner's workers: processes that share one Optuna study until it holds its N trials.

Sharing
    Every worker (``--n-workers K`` processes here, and those of the same command on other
    machines) opens the same storage and study and runs one trial at a time with
    ``study.optimize(n_trials=1)``; the storage (SQLite, PostgreSQL, a journal file) is the
    only thing they share: there is no scheduler.

Exactly N trials
    A trial holds one of the study's N places when it is complete, pruned, running or waiting
    (queued), unless it is marked surplus. A trial that starts while N trials with lower numbers
    hold places is marked surplus (user attribute ``"surplus"``, state ``PRUNED``) before it
    samples anything. All workers see the same trial numbers, so of two trials that race for
    the last place, the lower number takes it. This replaces Optuna's ``MaxTrialsCallback``,
    which lets workers that start together overshoot the count.

Killed and restarted
    Running trials send heartbeats (``RDBStorage`` and
    :class:`~spiking_dqn.search.storage.HeartbeatJournalStorage`). A worker that finds a
    running trial without heartbeat for ``2 * heartbeat_interval`` seconds marks it failed and
    Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a copy with the same parameters, which
    the next free worker runs: a killed trial is run again, a finished one never is. A worker
    whose parent process dies (SIGKILL of the command) stops within a second. A process killed
    between creating a trial and its first heartbeat leaves a running trial that Optuna never
    finds stale (it has no heartbeat) and that would hold its place for ever: a running trial
    that has sampled nothing for ``2 * heartbeat_interval`` seconds (plus :data:`UNSTARTED_GRACE_S`)
    of a worker's clock is failed as well (:func:`dead_trials`; a live trial samples its
    parameters first thing). A trial that
    raises an error (e.g. settings the spiking network refuses) is ``FAIL`` and gives its place
    to a new trial; after as many errors as the study has trials the workers stop.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from spiking_dqn.search.storage import open_storage, serialize_sqlite
from spiking_dqn.search.studies import DeadTrials, quiet_optuna, worker_name
from spiking_dqn.tune.objective import DIRECTIONS, TuneSettings, run_trial
from spiking_dqn.tune.space import base_params

#: User attribute of a trial that found the study full.
SURPLUS = "surplus"
#: Errors of one trial that fail it without stopping the worker.
TRIAL_ERRORS = (ValueError, RuntimeError, FloatingPointError)
#: Seconds between a waiting worker's looks at the study.
POLL_S = 1.0
#: Seconds beyond twice the heartbeat interval after which a running trial that sampled nothing is dead.
UNSTARTED_GRACE_S = 10.0


class TuneError(RuntimeError):
    """The study cannot go on (another study of that name, or the trials keep failing)."""


def holds_place(trial: FrozenTrial) -> bool:
    """Whether ``trial`` holds one of the study's places (see the module docstring)."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return trial.state in live and not trial.user_attrs.get(SURPLUS)


def finished(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count as done: complete or pruned, not surplus."""
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get(SURPLUS)]


def make_sampler() -> optuna.samplers.BaseSampler:
    """A two-objective TPE sampler; ``constant_liar`` keeps parallel workers from sampling the same region."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=5)


def retry_callback() -> Any:
    """Optuna's callback that queues a dead trial again with its parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback()


def open_tune_storage(storage: str, heartbeat_interval: int) -> optuna.storages.BaseStorage:
    """The study storage, with heartbeats, dead trials queued again, and SQLite's transactions serialized.

    :raises spiking_dqn.search.StorageUnavailableError: the storage cannot be opened
    """
    return serialize_sqlite(
        open_storage(storage, heartbeat_interval=heartbeat_interval, stale_trial_callback=retry_callback())
    )


def prepare_study(storage: optuna.storages.BaseStorage, study_name: str, settings: TuneSettings) -> optuna.Study:
    """Create or load the study, check it belongs to these settings, queue the env's entry as its first trial.

    :raises TuneError: a study of that name with other settings
    """
    with quiet_optuna():
        study = optuna.create_study(study_name=study_name, storage=storage, directions=list(DIRECTIONS),
                                    sampler=make_sampler(), load_if_exists=True)
        existing = study.user_attrs.get("settings")
        if existing is None:
            study.set_user_attr("settings", settings.fingerprint())
        elif not settings.matches(existing):
            raise TuneError(
                f"study {study_name!r} in this storage was run with other settings ({existing}); give the same "
                "options, or another --study-name or --storage"
            )
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(base_params(settings.env_id), user_attrs={"start": "zoo entry"}, skip_if_exists=True)
    return study


def dead_trials(heartbeat_interval: int) -> DeadTrials:
    """The rule that fails the running trials of dead workers (see the module docstring): a live trial samples its
    parameters first thing, so one that has sampled nothing ``2 * heartbeat_interval`` seconds (plus
    :data:`UNSTARTED_GRACE_S`) after this worker first saw it was left by a process that died. Those trials sampled
    nothing: nothing to run again, the place goes to a new trial."""
    return DeadTrials(lambda trial: bool(trial.params), 2 * heartbeat_interval + UNSTARTED_GRACE_S)


def work(storage: str, study_name: str, settings: TuneSettings, n_trials: int, out: Path,
         heartbeat_interval: int) -> None:
    """Run trials of the study until ``n_trials`` are done (by any worker).

    :raises TuneError: the trials keep failing
    """
    study = optuna.load_study(study_name=study_name, storage=open_tune_storage(storage, heartbeat_interval),
                              sampler=make_sampler())

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if sum(holds_place(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number) >= n_trials:
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("surplus: the study holds its trials")
        trial.set_user_attr("worker", worker_name())
        try:
            return run_trial(trial, settings, out)
        except TRIAL_ERRORS as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise

    dead = dead_trials(heartbeat_interval)
    while True:
        dead.fail(study)
        trials = study.get_trials(deepcopy=False)
        done = finished(trials)
        if len(done) >= n_trials:
            return
        errors = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
        if len(errors) >= max(n_trials, 3):
            raise TuneError(f"{len(errors)} trials failed; the last: {errors[-1].user_attrs['error']}")
        waiting = any(t.state == TrialState.WAITING for t in trials)
        running = sum(t.state == TrialState.RUNNING and holds_place(t) for t in trials)
        if not waiting and len(done) + running >= n_trials:
            time.sleep(POLL_S)  # the last places are being run: wait for them (or for their workers to die)
            continue
        with quiet_optuna():
            study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, gc_after_trial=True)


def worker_main(storage: str, study_name: str, settings: TuneSettings, n_trials: int, out: Path,
                heartbeat_interval: int, parent: int) -> None:
    """Entry of a worker process: one torch thread, stop when the parent dies, errors in one line."""
    import torch as th

    th.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    warnings.simplefilter("ignore")
    try:
        work(storage, study_name, settings, n_trials, out, heartbeat_interval)
    except Exception as exc:  # noqa: BLE001 - one line for the parent's error
        print(f"tune worker {worker_name()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def start_workers(count: int, storage: str, study_name: str, settings: TuneSettings, n_trials: int, out: Path,
                  heartbeat_interval: int) -> list[multiprocessing.process.BaseProcess]:
    """Start ``count`` worker processes (spawned: each its own interpreter)."""
    context = multiprocessing.get_context("spawn")
    processes = []
    for _ in range(count):
        process = context.Process(
            target=worker_main, args=(storage, study_name, settings, n_trials, out, heartbeat_interval, os.getpid()),
        )
        process.start()
        processes.append(process)
    return processes


def stop_workers(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Stop the workers (their running trials are queued again by the next run, after the grace period)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(10)
