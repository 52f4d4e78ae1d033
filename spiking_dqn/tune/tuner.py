"""``spiking-dqn tune``'s run: prepare the study, start the workers, show progress, write the front and the entry."""

from __future__ import annotations

import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import optuna

from spiking_dqn.search.storage import HEARTBEAT_INTERVAL
from spiking_dqn.tune.export import export_entry
from spiking_dqn.tune.front import points, write_front
from spiking_dqn.tune.objective import TuneSettings
from spiking_dqn.tune.space import zoo_entry
from spiking_dqn.tune.workers import (
    TuneError,
    finished,
    open_tune_storage,
    prepare_study,
    start_workers,
    stop_workers,
)

#: Seconds between the progress display's looks at the study.
PROGRESS_POLL_S = 1.0


def default_study_name(env_id: str) -> str:
    """The study of ``spiking-dqn tune ENV`` without ``--study-name``."""
    return f"tune-{env_id}"


def tune(
    settings: TuneSettings,
    n_trials: int,
    storage: str,
    out: Path,
    *,
    n_workers: int = 1,
    study_name: str | None = None,
    export: Path | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or join, or resume) the study until it holds ``n_trials`` trials; write the front (and the entry).

    :param settings: what every trial shares
    :param n_trials: trials of the study, shared by every worker (here and on other machines)
    :param storage: a database URL or a journal file (:func:`spiking_dqn.search.storage.open_storage`)
    :param out: output folder: ``pareto_front.md/.json/.png`` and ``trials/<number>/``
    :param n_workers: worker processes on this machine
    :param study_name: the study (default ``tune-<env>``)
    :param export: a YAML file to write the recommended trial's entry into
    :param heartbeat_interval: seconds between the heartbeats of running trials
    :param progress: show a progress bar
    :return: what ``pareto_front.json`` holds
    :raises spiking_dqn.search.StorageUnavailableError: the storage cannot be opened
    :raises TuneError: another study of that name, or the workers stopped before the end
    """
    name = study_name or default_study_name(settings.env_id)
    study = prepare_study(open_tune_storage(storage, heartbeat_interval), name, settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processes = start_workers(n_workers, storage, name, settings, n_trials, out, heartbeat_interval)
    try:
        watch(study, processes, n_trials, progress)
    finally:
        stop_workers(processes)
    done = len(finished(study.get_trials(deepcopy=False)))
    if done < n_trials:
        raise TuneError(f"the workers stopped after {done} of {n_trials} trials (their errors are above); run the "
                        "same command again to go on")
    data = write_front(out, study, settings.env_id, settings.episodes, n_trials)
    if export is not None and data["recommended"] is not None:
        chosen = next(p for p in points(study) if p.number == data["recommended"])
        comment = (f"spiking-dqn tune: trial {chosen.number} of study {name}: chip reward {chosen.reward:.1f} +- "
                   f"{chosen.reward_std:.1f}, {chosen.events:.0f} synaptic events per inference")
        export_entry(Path(export), settings.env_id, zoo_entry(settings.env_id, chosen.params, settings.timesteps),
                     comment)
    return data


def watch(study: optuna.Study, processes: Sequence[BaseProcess], n_trials: int, progress: bool) -> None:
    """Until every worker has stopped: trials done of ``n_trials``, the best chip reward so far, the front's size."""
    from tqdm import tqdm

    bar = tqdm(total=n_trials, desc="trials", unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        while True:
            alive = any(p.is_alive() for p in processes)
            trials = study.get_trials(deepcopy=False)
            bar.n = min(len(finished(trials)), n_trials)
            complete = points(study)
            best = max((p.reward for p in complete), default=None)
            bar.set_postfix_str(f"best chip reward {'-' if best is None else f'{best:.1f}'}, "
                                f"front {sum(p.on_front for p in complete)}", refresh=False)
            bar.refresh()
            if not alive:
                return
            time.sleep(PROGRESS_POLL_S)
    finally:
        bar.close()

