"""Two worker processes share one threshold-search study on a real PostgreSQL server.

The server is started on 127.0.0.1 by the ``postgres_url`` fixture (tests/conftest.py)
from the Debian packages that scripts/install_postgres.sh installs; the test skips, with
the reason, only where no server can be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

WORKER = Path(__file__).parent / "_search_worker.py"
sys.path.insert(0, str(WORKER.parent))
from _search_worker import study_names  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]
STAGE1 = [0.35, 0.5, 0.7, 1.0, 1.4, 2.0]
STAGE2 = [0.8, 1.25]  # 2 x 2 stage-2 points, none equal to a stage-1 point


@pytest.mark.slow  # two worker processes search a 10-point grid: several seconds
def test_two_workers_finish_the_grid_with_no_evaluation_twice_or_lost(postgres_url, tmp_path):
    study_name = "two-workers"
    procs, logs = [], []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    go = tmp_path / "go"
    for i in range(2):
        log = tmp_path / f"worker{i}.log"
        logs.append(log)
        cfg = dict(storage=postgres_url, study_name=study_name, stage1=STAGE1, stage2=STAGE2, episodes=2,
                   log=str(log), sleep=0.02, ready=str(tmp_path / f"ready{i}"), go=str(go), heartbeat_interval=5)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), json.dumps(cfg)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    deadline = time.time() + 90
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()  # both start searching at the same moment
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    # Both workers agree on the result, and both did part of the work.
    assert outputs[0]["best"] == outputs[1]["best"] and outputs[0]["reward"] == outputs[1]["reward"]
    assert all(o["evaluated_here"] >= 1 for o in outputs)
    assert sum(o["evaluated_here"] for o in outputs) == len(STAGE1) + len(STAGE2) ** 2

    # The backend saw every program exactly once, over both processes.
    evaluated = [tuple(json.loads(line)["thresholds"]) for log in logs for line in log.read_text().splitlines()]
    assert len(evaluated) == len(STAGE1) + len(STAGE2) ** 2
    assert not [k for k, n in Counter(evaluated).items() if n > 1], "a point was evaluated twice"
    pids = {json.loads(line)["pid"] for log in logs for line in log.read_text().splitlines()}
    assert len(pids) == 2

    # The study holds each grid point as exactly one COMPLETE trial; duplicates, if the two
    # workers raced for a point, were pruned before any evaluation.
    for stage, n_points in ((1, len(STAGE1)), (2, len(STAGE2) ** 2)):
        study = optuna.load_study(study_name=study_names(study_name)[stage - 1], storage=postgres_url)
        trials = study.get_trials()
        complete = [tuple(sorted(t.params.items())) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == len(set(complete)) == n_points
        for t in trials:
            assert t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED), t
            if t.state == optuna.trial.TrialState.PRUNED:
                assert "duplicate_of" in t.user_attrs and "worker" not in t.user_attrs
        workers = {t.user_attrs["worker"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert {int(w.rsplit(":", 1)[1]) for w in workers} <= pids  # host:pid of the two workers
    stage1_values = sorted(
        t.params["multiplier"]
        for t in optuna.load_study(study_name=study_names(study_name)[0], storage=postgres_url).get_trials()
        if t.state == optuna.trial.TrialState.COMPLETE
    )
    assert stage1_values == pytest.approx(STAGE1)


def test_postgres_url_without_driver_name_works(postgres_url):
    from spiking_dqn.search import open_storage

    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    assert bare != postgres_url
    study = optuna.create_study(study_name="bare-url", storage=open_storage(bare))
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0) * 2, n_trials=1)
    # The trial is in the server's database: the driver-qualified URL reads it back.
    again = optuna.load_study(study_name="bare-url", storage=postgres_url)
    assert [(t.params, t.value) for t in again.get_trials()] == [({"x": 0.25}, 0.5)]
