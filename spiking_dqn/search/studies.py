"""Optuna grids evaluated exactly once, by any number of workers sharing a storage.

The storages themselves (in memory, SQLite, PostgreSQL) are opened by
:func:`spiking_dqn.search.storage.open_storage`.

Exactly once
    Optuna's ``GridSampler`` alone may hand the same grid point to two workers at once,
    and it counts a failed point as visited, so a resumed study would never retry it.
    :func:`run_grid` therefore chooses the points itself: each worker repeatedly looks at
    the study, enqueues one grid point that has no finished (``COMPLETE``) and no pending
    (``WAITING`` or live ``RUNNING``) trial, and runs one trial. Every trial carries its
    parameters from the moment it is created (``enqueue_trial``), and before evaluating,
    a trial checks the study: if the same point is already ``COMPLETE``, or is ``RUNNING``
    or ``WAITING`` in a trial with a lower number, it is marked ``PRUNED`` (user attribute
    ``duplicate_of``) without being evaluated. Since all workers see the same trial
    numbers, exactly one of two trials that race for a point evaluates it. A worker only
    returns once every point is ``COMPLETE``; it waits for points that other workers are
    evaluating, and takes over a point whose worker died: trials send heartbeats
    (``RDBStorage(heartbeat_interval=...)``), and a ``RUNNING`` trial with no heartbeat for
    ``grace_period`` seconds is marked ``FAIL`` (``optuna.storages.fail_stale_trials``) and
    its point evaluated again. Finished evaluations are never repeated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from spiking_dqn.search.storage import heartbeat_enabled

Point = dict[str, float]


class SearchInterrupted(RuntimeError):
    """A search stopped by an error in the middle of an evaluation (e.g. a backend that stopped answering).

    :ivar study_name: the study that holds the finished evaluations
    :ivar storage: the storage URL (password hidden), or ``None`` for in-memory
    :ivar n_finished: evaluations finished and kept in the study
    """

    def __init__(self, message: str, study_name: str, storage: str | None, n_finished: int) -> None:
        super().__init__(message)
        self.study_name = study_name
        self.storage = storage
        self.n_finished = n_finished


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO logs for the duration (restored after)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def point_key(params: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """A hashable key of a grid point, robust to float formatting (12 significant digits)."""
    return tuple((name, float(f"{float(value):.12g}")) for name, value in sorted(params.items()))


def intended_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The point a trial evaluates: its parameters, or the ones it was enqueued with."""
    if trial.params:
        return dict(trial.params)
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if fixed else None


def worker_name() -> str:
    """``host:pid`` of this process, recorded with every evaluation."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ExactlyOnceGridSampler(optuna.samplers.GridSampler):
    """Optuna's ``GridSampler`` whose points :func:`run_grid` enqueues one by one.

    ``GridSampler.after_trial`` stops ``optimize`` once every point has a trial and looks
    up the grid index of the last trial, which enqueued trials do not have; here the
    runner decides when the grid is done, so that hook does nothing.
    """

    def after_trial(self, study, trial, state, values) -> None:  # type: ignore[override]
        return None


def open_study(
    storage: BaseStorage,
    study_name: str,
    points: Sequence[Point],
    fingerprint: str,
    description: Mapping[str, Any],
) -> optuna.Study:
    """Create or load a grid study and check that it belongs to this search.

    :param storage: an opened storage
    :param study_name: study name
    :param points: the grid points (all with the same parameter names)
    :param fingerprint: identifies the search (the whole program, environment, grid,
        episodes, seed); a study of the same name with another fingerprint is refused
    :param description: plain data stored with the study, for people reading it later
    :raises ValueError: the study exists for a different search
    """
    names = sorted(points[0])
    space = {name: sorted({float(p[name]) for p in points}) for name in names}
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=ExactlyOnceGridSampler(space, seed=random.SystemRandom().randrange(2**31)),
        direction="maximize",
        load_if_exists=True,
    )
    existing = study.user_attrs.get("fingerprint")
    if existing is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("search", dict(description))
    elif existing != fingerprint:
        raise ValueError(
            f"study {study_name!r} in this storage belongs to a different search (another environment, grid, "
            "episodes or seed, or another program); use another study name or storage, or delete that study "
            f"(optuna delete-study --study-name {study_name!r} --storage URL)"
        )
    return study


def _duplicate_of(study: optuna.Study, trial: optuna.Trial, key: tuple, wait_s: float = 5.0) -> int | None:
    """Number of a trial that already covers ``key`` (see module docstring), or None."""
    deadline = time.monotonic() + wait_s
    while True:
        unknown_earlier = False
        for other in study.get_trials(deepcopy=False):
            if other.number == trial.number:
                continue
            params = intended_params(other)
            if params is None:
                # Created by the sampler, parameters not written yet: it may be this point.
                unknown_earlier |= other.state == TrialState.RUNNING and other.number < trial.number
                continue
            if point_key(params) != key:
                continue
            if other.state == TrialState.COMPLETE:
                return other.number
            if other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
                return other.number
        if not unknown_earlier or time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def grid_status(
    study: optuna.Study, keys: set[tuple]
) -> tuple[dict[tuple, optuna.trial.FrozenTrial], set[tuple], bool]:
    """Finished trial per grid key, keys pending in other trials, and whether a trial waits in the queue."""
    complete: dict[tuple, optuna.trial.FrozenTrial] = {}
    pending: set[tuple] = set()
    waiting = False
    for t in study.get_trials(deepcopy=False):
        params = intended_params(t)
        key = point_key(params) if params is not None else None
        if t.state == TrialState.COMPLETE and key in keys and key not in complete:
            complete[key] = t
        elif t.state in (TrialState.RUNNING, TrialState.WAITING) and key is not None:
            pending.add(key)
        waiting |= t.state == TrialState.WAITING
    return complete, pending, waiting


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Mark another process's running ``trial`` failed; False when it was finished or failed first (by anyone)."""
    try:
        # Optuna gives a study's storage and a trial's id no public name; this is their one use here.
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
    except RuntimeError:  # UpdateFinishedTrialError: another worker failed or finished it first
        return False
    return True


@dataclasses.dataclass
class DeadTrials:
    """The running trials of workers that died, and their failing: one rule for the grid search and the tuner.

    Optuna fails a running trial whose heartbeats stopped (``fail_stale_trials``). A process
    killed between creating a trial and its first heartbeat leaves one that never goes stale
    and would hold its place for ever: such a trial, not ``started`` by a live process, is
    failed once this worker has seen it so for ``timeout_s`` seconds of its own clock
    (monotonic, from the first look: the clocks of workers on other machines never enter).

    :param started: whether a running trial was started by a live process (the grid search:
        its ``"started_by"`` attribute; the tuner: it sampled parameters)
    :param timeout_s: seconds a running trial may stay not started
    """

    started: Callable[[optuna.trial.FrozenTrial], bool]
    timeout_s: float
    first_seen: dict[int, float] = dataclasses.field(default_factory=dict)

    def fail(self, study: optuna.Study) -> list[int]:
        """Fail the study's stale trials and those not started for too long; the numbers of the latter."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now, failed = time.monotonic(), []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self.started(t):
                continue
            if now - self.first_seen.setdefault(t.number, now) > self.timeout_s and fail_trial(study, t):
                failed.append(t.number)
        return failed


def _show_progress(progress: Any, complete: Mapping[tuple, optuna.trial.FrozenTrial], shown: int) -> int:
    """Advance the progress bar to the points complete (by any worker); return how many it shows."""
    if progress is None or len(complete) <= shown:
        return shown
    progress.update(len(complete) - shown)
    best = max((t.value for t in complete.values() if t.value is not None), default=None)
    if best is not None and hasattr(progress, "set_postfix"):
        progress.set_postfix(best_reward=f"{best:.4g}")
    return len(complete)


def run_grid(
    study: optuna.Study,
    points: Sequence[Point],
    evaluate: Callable[[Point], tuple[float, dict[str, Any]]],
    progress: Any = None,
    poll_interval: float = 0.5,
    unclaimed_timeout: float | None = None,
) -> dict[tuple, optuna.trial.FrozenTrial]:
    """Evaluate every grid point of ``study`` exactly once, together with any other workers.

    :param study: a study from :func:`open_study`
    :param points: the grid points
    :param evaluate: ``point -> (value, user attributes)``; an exception stops the run
        (the trial is marked ``FAIL``, finished ones stay) and propagates
    :param progress: optional tqdm-like bar, advanced as points complete (by any worker)
    :param poll_interval: seconds between looks at the study while other workers finish
    :param unclaimed_timeout: seconds (this worker's clock) after which a running trial that
        never reached its objective (its worker died right after creating it, before any
        heartbeat) is marked failed; default ``max(30, 3 * grace period)``
    :return: the ``COMPLETE`` trial of every grid point, by :func:`point_key`
    """
    keys = {point_key(p): p for p in points}
    names = sorted(points[0])
    bounds = {n: (min(float(p[n]) for p in points), max(float(p[n]) for p in points)) for n in names}
    storage = study._storage  # noqa: SLF001 - public since Optuna 3 as Study._storage only
    heartbeat = heartbeat_enabled(storage)
    rng = random.Random(f"{worker_name()}:{time.time_ns()}")

    def objective(trial: optuna.Trial) -> float:
        if heartbeat:
            # Optuna's heartbeat thread may not have written yet; a worker killed before its
            # first heartbeat would leave a trial that never goes stale.
            storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
        trial.set_user_attr("started_by", worker_name())
        params = {n: trial.suggest_float(n, *bounds[n]) for n in names}
        key = point_key(params)
        if key not in keys:
            trial.set_user_attr("outside_grid", True)
            raise optuna.TrialPruned(f"point {params} is not on this grid")
        duplicate = _duplicate_of(study, trial, key)
        if duplicate is not None:
            trial.set_user_attr("duplicate_of", duplicate)
            raise optuna.TrialPruned(f"point {params} is already covered by trial {duplicate}")
        value, attrs = evaluate(keys[key])
        trial.set_user_attr("worker", worker_name())
        for name, attr in attrs.items():
            trial.set_user_attr(name, attr)
        return value

    if not heartbeat:
        # Without heartbeats nobody can tell a live worker from a dead one, so such a
        # storage is never shared: trials left running belong to a process that died.
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            fail_trial(study, t)

    grace = getattr(storage, "grace_period", None) or 2 * (getattr(storage, "heartbeat_interval", None) or 10)
    if unclaimed_timeout is None:
        unclaimed_timeout = max(30.0, 3.0 * grace)
    dead = DeadTrials(lambda t: "started_by" in t.user_attrs, unclaimed_timeout)
    shown = 0
    while True:
        if heartbeat:
            dead.fail(study)
        complete, pending, waiting = grid_status(study, set(keys))
        shown = _show_progress(progress, complete, shown)
        if len(complete) == len(keys):
            return complete
        missing = [k for k in keys if k not in complete and k not in pending]
        if missing:
            study.enqueue_trial(dict(keys[rng.choice(missing)]))
        elif not waiting:
            time.sleep(poll_interval)  # other workers are evaluating the last points
            continue
        try:
            study.optimize(objective, n_trials=1, gc_after_trial=False, show_progress_bar=False)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # This worker stalled for longer than the grace period: another one marked its
            # trial failed and will evaluate the point again; drop this evaluation.
            if not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) and "Cannot tell a" not in str(exc):
                raise
            warnings.warn(
                f"an evaluation of this worker was taken over by another worker (no heartbeat for the grace "
                f"period, {grace} s): its result is discarded ({exc})",
                RuntimeWarning,
                stacklevel=2,
            )
