"""``spiking-dqn tune``: the search space, the pruning and recommendation rules, the exported entry, workers sharing
one study (exact trial count, no duplicates), a killed run resumed, journal storage (issue 26)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from spiking_dqn.cli import main
from spiking_dqn.recipes.hyperparams import load_hyperparams, parse_policy_kwargs, zoo_entries
from spiking_dqn.search.storage import open_storage
from spiking_dqn.tune import TuneSettings, workers
from spiking_dqn.tune.export import ExportError, export_entry, merge_entry
from spiking_dqn.tune.front import Point, recommend
from spiking_dqn.tune.pruning import attr_name, should_prune
from spiking_dqn.tune.space import PARAMS, SPACE, base_params, recipe_of, sample, zoo_entry

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo_configs" / "dqn.yml"
#: A tiny study: CartPole-v0, a few hundred steps, few episodes.
TINY = ["--timesteps", "300", "--episodes", "3", "--prune-episodes", "2", "--qat-steps", "0", "--no-progress"]


def _in_space(params: dict) -> bool:
    for name, value in params.items():
        p = PARAMS[name]
        if p.choices is not None:
            if value not in p.choices:
                return False
        elif not p.low <= value <= p.high:
            return False
    return set(params) == {p.name for p in SPACE}


@pytest.mark.parametrize("env_id", ["CartPole-v0", "Acrobot-v1"])
def test_first_trial_is_the_zoo_entry(env_id: str) -> None:
    params = base_params(env_id)
    assert _in_space(params)
    entry = load_hyperparams(env_id)
    hyperparams = recipe_of(env_id, params).hyperparams
    for key, value in entry.items():
        if key == "policy_kwargs":
            for name, option in value.items():
                assert hyperparams["policy_kwargs"][name] == option, (env_id, name)
        elif key == "gradient_steps" and value == -1:
            assert hyperparams[key] == hyperparams["train_freq"]  # -1: one gradient step per env step
        else:
            assert hyperparams[key] == value, (env_id, key)
    assert recipe_of(env_id, params).weight_bits == 8


def test_sampled_trials_stay_in_the_space_and_build() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        trial = study.ask()
        params = sample(trial)
        assert _in_space(params)
        recipe = recipe_of("CartPole-v0", params)
        kwargs = recipe.hyperparams["policy_kwargs"]
        assert kwargs["net_arch"] == [params["hidden_width"]] * params["hidden_layers"]
        study.tell(trial, [0.0, 0.0])


def test_exported_entry_reads_back(tmp_path: Path) -> None:
    params = {**base_params("Acrobot-v1"), "obs_scale": 1.5, "aspen_noise": 0.25, "encoding": "hybrid",
              "learning_rate": 5e-5, "exploration_fraction": 0.123456}
    entry = zoo_entry("Acrobot-v1", params, 20000)
    path = tmp_path / "tuned.yml"
    export_entry(path, "Acrobot-v1", entry, "spiking-dqn tune: trial 7")
    read = yaml.safe_load(path.read_text())["Acrobot-v1"]
    assert read["n_timesteps"] == 20000 and read["policy"] == "spiking_dqn.SpikingDQNPolicy"
    kwargs = parse_policy_kwargs(read["policy_kwargs"])
    assert kwargs["obs_bound"] == [1.5, 1.5, 1.5, 1.5, 9.0, 18.0]
    assert kwargs["threshold_noise"] == [1.0, 1.25] and kwargs["encoding"] == "hybrid"
    assert isinstance(read["learning_rate"], float) and read["learning_rate"] == 5e-5  # written !!float 5e-05
    assert read["exploration_fraction"] == 0.1235


def test_export_merges_without_destroying_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "dqn.yml"
    path.write_text(ZOO.read_text())
    before = yaml.safe_load(path.read_text())
    entry = zoo_entry("MountainCar-v0", base_params("MountainCar-v0"), 1234)
    export_entry(path, "MountainCar-v0", entry, "spiking-dqn tune: first")
    export_entry(path, "MountainCar-v0", {**entry, "n_timesteps": 4321}, "spiking-dqn tune: second")
    export_entry(path, "CartPole-v1", zoo_entry("CartPole-v1", base_params("CartPole-v1"), 999), "spiking-dqn tune")
    text = path.read_text()
    after = yaml.safe_load(text)
    assert after["MountainCar-v0"]["n_timesteps"] == 4321 and text.count("MountainCar-v0:") == 1
    assert "spiking-dqn tune: first" not in text and text.count("spiking-dqn tune: second") == 1
    assert after["CartPole-v1"]["n_timesteps"] == 999
    for key in set(before) - {"MountainCar-v0", "CartPole-v1"}:
        assert after[key] == before[key], key
    assert "# rl-zoo style hyperparameters" in text  # the file's comments stay
    with pytest.raises(ExportError, match="anchor"):  # CartPole-v1 merges CartPole-v0 through an anchor
        merge_entry(ZOO.read_text(), "CartPole-v0", "CartPole-v0:\n  n_timesteps: 1\n")


def test_median_rule_prunes_below_the_median_of_finished_trials_best_values() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for value in (10.0, 20.0, 30.0):
        trial = study.ask()
        trial.set_user_attr(attr_name(100), value)
        study.tell(trial, [value, 1.0])
    running = study.ask()
    assert should_prune(study, running.number, 100, 15.0, startup_trials=3, warmup_steps=0)
    assert not should_prune(study, running.number, 100, 25.0, startup_trials=3, warmup_steps=0)
    assert not should_prune(study, running.number, 100, 15.0, startup_trials=4, warmup_steps=0)  # too few yet
    assert not should_prune(study, running.number, 100, 15.0, startup_trials=3, warmup_steps=101)  # warm-up
    assert not should_prune(study, running.number, 200, 0.0, startup_trials=1, warmup_steps=0)  # no value at 200
    for early, late in ((10.0, 5.0), (20.0, 8.0), (30.0, 1.0)):  # judged on their best so far: 10, 20, 30
        trial = study.ask()
        trial.set_user_attr(attr_name(100), early)
        trial.set_user_attr(attr_name(200), late)
        study.tell(trial, state=TrialState.PRUNED)
    assert should_prune(study, running.number, 200, 15.0, startup_trials=3, warmup_steps=0)
    assert not should_prune(study, running.number, 200, 25.0, startup_trials=3, warmup_steps=0)


def test_recommendation_is_the_fewest_events_within_noise_of_the_best() -> None:
    front = [Point(0, 200.0, 0.0, 900.0, {}), Point(1, 199.0, 3.0, 300.0, {}), Point(2, 150.0, 10.0, 100.0, {})]
    assert recommend(front, 20).number == 0  # no spread at the best: only the best reward
    front[0].reward_std = 5.0  # 2 * 5 / sqrt(20) = 2.24: trial 1 is within noise
    assert recommend(front, 20).number == 1
    assert recommend([], 20) is None


def test_workers_share_the_study_and_stop_at_exactly_n_trials(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Three in-process workers racing on one SQLite study (the trial itself faked): exactly N places taken."""
    calls: list[int] = []

    def fake_trial(trial: optuna.Trial, settings: TuneSettings, out: Path) -> tuple[float, float]:
        params = sample(trial)
        calls.append(trial.number)
        time.sleep(0.05)
        return float(params["ticks"]), float(params["hidden_width"])

    monkeypatch.setattr(workers, "run_trial", fake_trial)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    settings = TuneSettings(env_id="CartPole-v0", timesteps=100)
    workers.prepare_study(workers.open_tune_storage(url, 5), "s", settings)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            workers.work(url, "s", settings, 7, tmp_path, 5)
        except BaseException as exc:  # noqa: BLE001 - a worker that failed (e.g. two popped one queued trial)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    done = workers.finished(study.get_trials())
    assert len(done) == 7 and len(calls) == 7 and len(set(calls)) == 7
    assert all(t.state == TrialState.PRUNED for t in study.get_trials() if t.user_attrs.get("surplus"))
    assert study.trials[0].params == base_params("CartPole-v0")  # the zoo entry ran first


def test_a_trial_fits_with_the_packages_default_fine_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --qat-steps a trial's program is the one a user's fit gets (the default rule's distillation)."""
    from spiking_dqn.pipeline import QATSettings, settings as fit_settings
    from spiking_dqn.tune.objective import run_trial

    monkeypatch.setattr(fit_settings, "ROBUST_QAT", QATSettings(steps=30))  # the rule's fine-tuning, at a tiny budget
    settings = TuneSettings(env_id="CartPole-v0", timesteps=300, episodes=3)
    assert settings.qat_steps is None  # the default: the fit's own rule
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(lambda trial: run_trial(trial, settings, tmp_path), n_trials=1)
    summary = json.loads(Path(study.trials[0].user_attrs["folder"], "summary.json").read_text())
    assert (summary["qat"]["steps"], summary["qat"]["mode"]) == (30, "distill")


def test_a_trial_killed_before_its_first_heartbeat_gives_its_place_back(tmp_path: Path) -> None:
    """A running trial that never sampled (its process died before any heartbeat) is failed, not waited for."""
    storage = workers.open_tune_storage(f"sqlite:///{tmp_path / 'study.db'}", 1)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    with pytest.warns(UserWarning, match="Heartbeat"):  # trials asked by hand, as a worker's optimize() would create them
        unstarted, started = study.ask(), study.ask()
    started.suggest_int("ticks", 6, 32)
    dead = workers.dead_trials(1)
    assert dead.fail(study) == []  # too young to be dead
    assert dead.timeout_s == 2 + workers.UNSTARTED_GRACE_S
    dead.first_seen = {number: seen - 60.0 for number, seen in dead.first_seen.items()}  # as if seen a minute ago
    assert dead.fail(study) == [unstarted.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {unstarted.number: TrialState.FAIL, started.number: TrialState.RUNNING}


def test_a_study_resumes_only_with_its_settings(tmp_path: Path) -> None:
    storage = workers.open_tune_storage(f"sqlite:///{tmp_path / 'study.db'}", 5)
    settings = TuneSettings(env_id="CartPole-v0", timesteps=100)
    study = workers.prepare_study(storage, "s", settings)
    assert workers.prepare_study(storage, "s", settings).study_name == "s"
    assert len(study.get_trials()) == 1  # the zoo entry, queued once
    with pytest.raises(workers.TuneError, match="other settings"):
        workers.prepare_study(storage, "s", TuneSettings(env_id="CartPole-v0", timesteps=200))
    study.set_user_attr("settings", '{"env_id": "CartPole-v0", "timesteps": 100}')  # recorded before a new setting
    workers.prepare_study(storage, "s", settings)


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and "error:" in lines[0], (argv, err)
    return lines[0]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "out")]
    assert "--trials" in _bad(["tune", "CartPole-v0", "--trials", "0", *out], capsys)
    assert "nosuchdb" in _bad(["tune", "CartPole-v0", "--storage", "nosuchdb://x", *out], capsys)
    assert "NoSuchEnv-v0" in _bad(["tune", "NoSuchEnv-v0", *out], capsys)
    assert "--storage" in _bad(["tune", "CartPole-v0", "--storage", "/dev/null/x.log", *out], capsys)
    assert "--export" in _bad(["tune", "CartPole-v0", "--export", str(tmp_path), *out], capsys)
    assert not (tmp_path / "out").exists()


def _command(out: Path, storage: str, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spiking_dqn.cli", "tune", "CartPole-v0", "--trials", str(trials), "--storage",
            storage, "--out", str(out), *TINY, *extra]


def _study(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="tune-CartPole-v0", storage=open_storage(storage))


def _check_exact(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    done = workers.finished(study.get_trials())
    assert len(done) == n
    assert len({t.number for t in done}) == n
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    assert all(Path(t.user_attrs["folder"], "best_program.npz").is_file() for t in complete)
    return done


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run = subprocess.run(_command(tmp_path / "out", storage, 3, "--n-workers", "2"), capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    done = _check_exact(_study(storage), 3)
    assert len({t.user_attrs.get("worker") for t in done}) == 2  # both workers ran trials
    assert (tmp_path / "out" / "pareto_front.md").is_file()


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_repeating_a_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # trials long enough (a few seconds) for the poll below to see one running: at 300 steps some take 0.3 s
    command = _command(tmp_path / "out", storage, 3, "--heartbeat-interval", "1", "--timesteps", "2000")
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    killed: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        if not (tmp_path / "study.db").exists():
            continue
        try:
            trials = _study(storage).get_trials()
        except KeyError:  # the study is not created yet
            continue
        # mid-training: every parameter sampled (a trial killed while sampling is run again with the ones it had)
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.params) == len(SPACE)]
        if any(t.state == TrialState.COMPLETE for t in trials) and running:
            os.killpg(process.pid, signal.SIGKILL)  # the command and its workers, mid-trial
            killed = running
            break
    process.wait(30)
    assert killed, "no trial was running after a complete one"
    # the trials the kill caught mid-trial (one that finished between the look above and the kill is complete)
    killed = [t for t in _study(storage).get_trials() if t.number in {k.number for k in killed}
              and t.state == TrialState.RUNNING]
    assert killed, "every running trial finished before the kill"
    before = {t.number for t in _study(storage).get_trials() if t.state == TrialState.COMPLETE}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    study = _study(storage)
    done = _check_exact(study, 3)
    assert before <= {t.number for t in done}  # finished trials kept, not run again
    dead = study.trials[killed[0].number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in done if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].params == dead.params  # the killed trial ran again, once


@pytest.mark.slow
def test_journal_storage_front_files_and_the_exported_entry_trains(tmp_path: Path) -> None:
    from envs import make_vec
    from spiking_dqn.dqn import SpikingDQN
    from spiking_dqn.policies import SpikingDQNPolicy

    storage = str(tmp_path / "study.log")
    export = tmp_path / "tuned.yml"
    run = subprocess.run(_command(tmp_path / "out", storage, 2, "--export", str(export), "--qat-steps", "40"),
                         capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    done = _check_exact(_study(storage), 2)
    for trial in done:
        if trial.state == TrialState.COMPLETE:  # the fit ran its QAT
            assert json.loads(Path(trial.user_attrs["folder"], "summary.json").read_text())["qat"]["steps"] == 40
    for name in ("pareto_front.md", "pareto_front.json", "pareto_front.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    entry = dict(yaml.safe_load(export.read_text())["CartPole-v0"])
    assert entry.pop("policy") == "spiking_dqn.SpikingDQNPolicy" and entry.pop("n_timesteps") == 300
    entry["policy_kwargs"] = parse_policy_kwargs(entry["policy_kwargs"])
    model = SpikingDQN(SpikingDQNPolicy, make_vec("CartPole-v0", n_envs=1, seed=0), seed=0, **{
        **entry, "learning_starts": 0})
    model.learn(200)
    assert model.num_timesteps >= 200
    assert set(zoo_entries()) >= {"CartPole-v0"}  # the packaged file is untouched
