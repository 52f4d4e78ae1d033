"""The rl-zoo hyperparameter file: the recipes' one source, shipped in the wheel, and playable with rl_zoo3."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spiking_dqn.recipes import hyperparams
from spiking_dqn.recipes.hyperparams import load_hyperparams, parse_policy_kwargs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "zoo_configs" / "dqn.yml"


def _zoo(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _env() -> dict:
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_recipes_use_exactly_the_file_entries():
    from agents import acrobot, cartpole

    config = yaml.safe_load(CONFIG.read_text())
    assert {"CartPole-v0", "CartPole-v1", "Acrobot-v1", "LunarLander-v3", "MountainCar-v0"} <= set(config)
    for recipe in (cartpole, acrobot):
        entry = dict(config[recipe.ENV_ID])
        assert entry.pop("policy") == "spiking_dqn.SpikingDQNPolicy"
        assert recipe.TIMESTEPS == int(entry.pop("n_timesteps"))
        # rl-zoo evaluates the string; evaluated with builtins only, it gives what the recipe trains with
        assert recipe.HYPERPARAMS["policy_kwargs"] == eval(entry.pop("policy_kwargs"), {"__builtins__": {"dict": dict}})
        assert recipe.HYPERPARAMS == {**entry, "policy_kwargs": recipe.HYPERPARAMS["policy_kwargs"]}
        assert recipe.HYPERPARAMS == load_hyperparams(recipe.ENV_ID)


def test_the_file_ships_in_the_wheel_and_is_read_as_a_package_resource(monkeypatch):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert "zoo_configs*" in setuptools["packages"]["find"]["include"]
    assert "dqn.yml" in setuptools["package-data"]["zoo_configs"]
    assert (ROOT / "zoo_configs" / "__init__.py").is_file()
    # read through importlib.resources from the zoo_configs package, not from a path of the clone
    calls = []
    files = hyperparams.resources.files
    monkeypatch.setattr(hyperparams.resources, "files", lambda package: calls.append(package) or files(package))
    assert hyperparams.zoo_entries() == yaml.safe_load(CONFIG.read_text())
    assert calls == ["zoo_configs"]


def test_policy_kwargs_are_read_without_evaluating_them():
    assert parse_policy_kwargs("dict(net_arch=[64, 64], ticks=16, obs_bound=[1.0, 6.0])") == {
        "net_arch": [64, 64], "ticks": 16, "obs_bound": [1.0, 6.0]
    }
    assert parse_policy_kwargs("{'ticks': 8}") == {"ticks": 8}
    for text in ("__import__('os').system('true')", "dict(ticks=len('abc'))", "dict(**x)", "dict(", "[1, 2]"):
        with pytest.raises(ValueError):
            parse_policy_kwargs(text)


def test_an_env_without_an_entry_gets_the_documented_defaults():
    params, timesteps, source = hyperparams.hyperparams_for("NoEntry-v0")
    assert params == hyperparams.DEFAULT_HYPERPARAMS and params is not hyperparams.DEFAULT_HYPERPARAMS
    assert timesteps == hyperparams.DEFAULT_TIMESTEPS and "defaults" in source
    params, timesteps, source = hyperparams.hyperparams_for("CartPole-v1")
    assert timesteps == 100_000 and params == load_hyperparams("CartPole-v1") and "entry" in source
    with pytest.raises(KeyError):
        load_hyperparams("NoEntry-v0")


@pytest.mark.slow
def test_rl_zoo_train_then_enjoy(tmp_path):
    _zoo(
        "rl_zoo3.train", "--algo", "dqn", "--env", "CartPole-v0", "-conf", str(CONFIG),
        "-n", "1200", "-f", str(tmp_path), "--seed", "0", "--eval-freq", "-1",
    )
    assert (tmp_path / "dqn" / "CartPole-v0_1" / "CartPole-v0.zip").exists()
    out = _zoo(
        "rl_zoo3.enjoy", "--algo", "dqn", "--env", "CartPole-v0", "-f", str(tmp_path),
        "--n-timesteps", "200", "--no-render",
    )
    assert "Mean reward" in out


# ---------------------------------------------------- python -m spiking_dqn.zoo train (rl-zoo's -optimize)

#: A trial of rl-zoo's -optimize at a tiny budget: one trial, one evaluation of one episode, its model saved.
OPTIMIZE = ("--algo", "dqn", "--env", "Acrobot-v1", "-conf", str(CONFIG), "-optimize", "--n-trials", "1",
            "--n-timesteps", "200", "--n-evaluations", "1", "--eval-episodes", "1", "--no-optim-plots",
            "--seed", "0", "--optimization-log-path", "trials", "-f", "logs")


def _in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=folder, capture_output=True, text=True, timeout=300, env=_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _file_policy_kwargs(env_id: str) -> dict:
    return parse_policy_kwargs(yaml.safe_load(CONFIG.read_text())[env_id]["policy_kwargs"])


def _trial_policy(folder: Path):
    """The policy of the model that trial 0 saved (rl-zoo's --optimization-log-path)."""
    from stable_baselines3 import DQN

    return DQN.load(folder / "trials" / "trial_0" / "best_model.zip", device="cpu").policy


def test_plain_rl_zoo_optimize_drops_the_files_spiking_settings(tmp_path):
    """Why spiking_dqn.zoo exists: rl_zoo3's DQN sampler replaces policy_kwargs with {'net_arch': ...}.

    If this fails, rl_zoo3 keeps the file's policy_kwargs now, and the wrapper may have become unneeded.
    """
    pytest.importorskip("rl_zoo3")
    file_kwargs = _file_policy_kwargs("Acrobot-v1")
    assert file_kwargs["ticks"] == 20 and file_kwargs["obs_bound"] == [1.0, 1.0, 1.0, 1.0, 6.0, 12.0]
    _in(tmp_path, "rl_zoo3.train", *OPTIMIZE)
    policy = _trial_policy(tmp_path)
    assert policy.spiking_config.ticks == 10  # SpikingConfig's default, not the file's 20
    assert policy.obs_bound is None  # the space's bounds (4 pi and 9 pi for the velocities), not the file's
    assert list(policy.q_net.bound_choice.bound[4:]) != [6.0, 12.0]


def test_zoo_optimize_keeps_the_files_spiking_settings(tmp_path):
    pytest.importorskip("rl_zoo3")
    file_kwargs = _file_policy_kwargs("Acrobot-v1")
    out = _in(tmp_path, "spiking_dqn.zoo", "train", *OPTIMIZE).stdout
    policy = _trial_policy(tmp_path)
    assert policy.spiking_config.ticks == file_kwargs["ticks"] == 20
    assert policy.obs_bound == file_kwargs["obs_bound"]
    assert list(policy.spiking_config.net_arch) == file_kwargs["net_arch"]  # the file's widths, not rl-zoo's
    assert policy.spiking_config.beta == file_kwargs["beta"]
    assert "keeping the file's policy_kwargs" in out and "policy_kwargs: {'net_arch': [128, 128], 'ticks': 20" in out


def test_zoo_without_optimize_is_plain_rl_zoo_training(tmp_path):
    """Same arguments, same seed: the wrapper's model is rl_zoo3.train's, weight for weight."""
    pytest.importorskip("rl_zoo3")
    import torch
    from stable_baselines3 import DQN

    args = ("--algo", "dqn", "--env", "CartPole-v0", "-conf", str(CONFIG), "-n", "300", "-f", "logs",
            "--seed", "0", "--eval-freq", "-1", "-params", "learning_starts:0")
    models = []
    for module in (("spiking_dqn.zoo", "train"), ("rl_zoo3.train",)):
        folder = tmp_path / module[0]
        folder.mkdir()
        _in(folder, *module, *args)
        models.append(DQN.load(folder / "logs" / "dqn" / "CartPole-v0_1" / "CartPole-v0.zip", device="cpu"))
    ours, plain = models
    assert ours.num_timesteps >= 300 and ours._n_updates > 0  # it trained
    assert ours.policy_kwargs == plain.policy_kwargs == _file_policy_kwargs("CartPole-v0")
    theirs = dict(plain.policy.named_parameters())
    assert all(torch.equal(value, theirs[name]) for name, value in ours.policy.named_parameters())


def test_rl_zoo_still_has_the_hooks_the_wrapper_uses():
    """What spiking_dqn.zoo relies on in rl_zoo3 (2.9.2 tested): fails when a release changes it."""
    pytest.importorskip("rl_zoo3")
    import inspect

    import rl_zoo3.train
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER, sample_dqn_params

    from spiking_dqn import zoo

    # train() builds the manager by its name in rl_zoo3.train's globals and reads sys.argv (zoo._rl_zoo_with)
    assert "ExperimentManager" in rl_zoo3.train.train.__code__.co_names
    assert rl_zoo3.train.ExperimentManager is ExperimentManager
    # a trial samples through the HYPERPARAMS_SAMPLER table, over the manager's _hyperparams (zoo.manager_class)
    assert {"HYPERPARAMS_SAMPLER", "_hyperparams"} <= set(ExperimentManager.objective.__code__.co_names)
    assert "objective" in ExperimentManager.hyperparameters_optimization.__code__.co_names
    assert HYPERPARAMS_SAMPLER["dqn"] is sample_dqn_params
    # --trial-id reads a stored trial through the manager's load_trial (zoo.stored_trial_hyperparams)
    assert "load_trial" in ExperimentManager.read_hyperparameters.__code__.co_names
    assert list(inspect.signature(ExperimentManager.load_trial).parameters) == [
        "self", "storage", "study_name", "trial_id", "convert"
    ]
    assert list(inspect.signature(sample_dqn_params).parameters) == ["trial", "n_actions", "n_envs", "additional_args"]
    # the swaps are undone after the call
    argv = list(sys.argv)
    with zoo._rl_zoo_with(zoo.manager_class(zoo.ZooOptions()), ["--help"]):
        assert rl_zoo3.train.ExperimentManager is not ExperimentManager and sys.argv[1:] == ["--help"]
    assert rl_zoo3.train.ExperimentManager is ExperimentManager and sys.argv == argv


def test_trial_policy_kwargs_keep_the_files_options():
    from spiking_dqn.zoo import trial_policy_kwargs

    file_kwargs = {"net_arch": [128, 128], "ticks": 20, "obs_bound": [1.0, 6.0]}
    sampled = {"net_arch": [256, 256]}
    assert trial_policy_kwargs(file_kwargs, sampled) == file_kwargs
    assert trial_policy_kwargs(file_kwargs, sampled, zoo_net_arch=True) == {**file_kwargs, "net_arch": [256, 256]}
    # where the file sets no widths, rl-zoo's sampled ones apply
    assert trial_policy_kwargs({"ticks": 20}, sampled) == {"net_arch": [256, 256], "ticks": 20}
    assert trial_policy_kwargs(None, sampled) == sampled


def test_the_spiking_space_samples_the_tuners_parameters_over_the_files():
    pytest.importorskip("rl_zoo3")
    import optuna
    from rl_zoo3.hyperparams_opt import sample_dqn_params

    from spiking_dqn import zoo
    from spiking_dqn.tune import space

    file_kwargs = _file_policy_kwargs("Acrobot-v1")
    sampler = zoo.SpikingDQNSampler(sample_dqn_params, file_kwargs, zoo.ZooOptions(spiking_space=True), "Acrobot-v1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        trial = study.ask()
        hyperparams = sampler(trial, 3, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        policy = hyperparams["policy_kwargs"]
        assert set(zoo.SPIKING_PARAMS) <= set(trial.params) <= set(trial.params) | set(space.PARAMS)
        assert policy["ticks"] == trial.params["ticks"] and policy["beta"] == trial.params["beta"]
        assert policy["net_arch"] == [trial.params["hidden_width"]] * trial.params["hidden_layers"]
        scale = trial.params["obs_scale"]
        # scaled as the tuner scales them (4 significant digits, as exported)
        assert policy["obs_bound"] == pytest.approx([b * scale for b in file_kwargs["obs_bound"]], rel=1e-3)
        assert trial.user_attrs["policy_kwargs"] == repr(policy)
        assert "gamma" in hyperparams and "learning_rate" in hyperparams  # rl-zoo's own samples are kept
    assert file_kwargs == _file_policy_kwargs("Acrobot-v1")  # the file's dict is not changed


def test_zoo_options_are_refused_where_they_do_nothing(capsys):
    pytest.importorskip("rl_zoo3")
    from spiking_dqn import zoo

    assert zoo.main(["train", "--spiking-space", "--zoo-net-arch"]) == 2
    assert "leave out --zoo-net-arch" in capsys.readouterr().err
    # without -optimize, rl-zoo trains with the file's policy_kwargs: the options would be ignored
    assert zoo.main(["train", "--spiking-space", "--algo", "dqn", "--env", "CartPole-v0", "-conf", str(CONFIG)]) == 2
    assert "apply to -optimize with --algo dqn only" in capsys.readouterr().err
    assert zoo.main([]) == 2 and "usage: python -m spiking_dqn.zoo train" in capsys.readouterr().err


def test_a_stored_trial_gives_back_the_policy_kwargs_it_trained(tmp_path):
    """rl-zoo's --trial-id through the wrapper: the trial's recorded policy_kwargs, no spiking parameter in DQN's."""
    pytest.importorskip("rl_zoo3")
    import optuna
    from rl_zoo3.hyperparams_opt import sample_dqn_params

    from spiking_dqn import zoo

    storage = str(tmp_path / "study.log")
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    study = optuna.create_study(storage=journal, study_name="s", direction="maximize")
    sampler = zoo.SpikingDQNSampler(sample_dqn_params, _file_policy_kwargs("Acrobot-v1"),
                                    zoo.ZooOptions(spiking_space=True), "Acrobot-v1")
    trained = []
    for value in (1.0, 2.0):
        trial = study.ask()
        trained.append(sampler(trial, 3, 1, {"using_her_replay_buffer": False, "her_kwargs": {}}))
        study.tell(trial, value)
    assert zoo.stored_trial_hyperparams(storage, "s", 0) == trained[0]
    assert zoo.stored_trial_hyperparams(storage, "s") == trained[1]  # the best
    # a trial of plain rl-zoo records no policy_kwargs: it gets rl-zoo's conversion, as it trained
    plain = optuna.create_study(storage=journal, study_name="plain", direction="maximize")
    trial = plain.ask()
    expected = sample_dqn_params(trial, 3, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
    plain.tell(trial, 0.0)
    assert zoo.stored_trial_hyperparams(storage, "plain", 0) == expected


@pytest.mark.slow
def test_zoo_trains_a_stored_trial_with_its_spiking_settings(tmp_path):
    """-optimize --spiking-space into a journal file, then rl-zoo's --trial-id: the model has the trial's options."""
    pytest.importorskip("rl_zoo3")
    import optuna
    from stable_baselines3 import DQN

    study = ("--storage", "study.log", "--study-name", "s")
    optimize = [a for a in OPTIMIZE if a not in ("--optimization-log-path", "trials")]
    optimize[optimize.index("--n-trials") + 1] = "2"
    _in(tmp_path, "spiking_dqn.zoo", "train", "--spiking-space", *optimize, *study)
    # rl-zoo loads a trial only when --trial-id is not 0 (it tests the number's truth): trial 1
    _in(tmp_path, "spiking_dqn.zoo", "train", "--algo", "dqn", "--env", "Acrobot-v1", "-conf", str(CONFIG),
        "-n", "100", "--eval-freq", "-1", "-f", "logs", "--seed", "0", *study, "--trial-id", "1")
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    trial = optuna.load_study(storage=journal, study_name="s").trials[1]
    model = DQN.load(tmp_path / "logs" / "dqn" / "Acrobot-v1_2" / "Acrobot-v1.zip", device="cpu")
    assert model.policy_kwargs == parse_policy_kwargs(trial.user_attrs["policy_kwargs"])
    assert model.policy.spiking_config.ticks == trial.params["ticks"]
    assert model.lr_schedule(1.0) == trial.params["learning_rate"]
