"""The ``spiking-dqn`` command line as a newcomer meets it: help, version, refusals, defaults, any env."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from stable_baselines3 import DQN

from envs import make_vec
from spiking_dqn import SpikingDQNPolicy, __version__
from spiking_dqn.cli import show_each_warning_once, build_parser, infer_env_id, main
from spiking_dqn.cli.arguments import join_negative_lists
from spiking_dqn.recipes.recipe import BoundedProgressBar

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_import_does_not_import_agents():
    code = "import sys, spiking_dqn.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'agents'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spiking-dqn {__version__}"


def test_top_level_help_is_plain_text_with_examples(capsys):
    assert _exit_code(["--help"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text
    assert "examples:\n  spiking-dqn demo" in text  # the examples keep their lines
    for command in ("train", "demo", "deploy", "compare", "search", "calibrate"):
        assert f"    {command}" in text


def test_every_option_has_help_and_shows_its_default(capsys):
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert _exit_code(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "episodes of the final evaluation (default: 100)" in text
    assert "learning_rate=0.0005" in text  # the defaults for an env without a zoo entry
    assert _exit_code(["calibrate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "search episode" not in text and "observations are recorded from env seed + 10000" in text


def test_each_option_is_declared_once_in_its_options_dataclass():
    import dataclasses

    from spiking_dqn.cli.arguments import read_options
    from spiking_dqn.cli.fit import CALIBRATE, DEPLOY, SEARCH, FitOptions
    from spiking_dqn.pipeline import CalibrationSettings, SearchSettings
    from spiking_dqn.recipes.recipe import TrainOptions

    assert set(SEARCH) | set(CALIBRATE) | set(DEPLOY) == {f.name for f in dataclasses.fields(FitOptions)}
    parser = build_parser()
    search = read_options(parser.parse_args(["search", "m.zip"]), FitOptions)
    assert search.stage1 == list(SearchSettings().stage1_grid) and search.episodes == SearchSettings().episodes
    assert search.model == Path("m.zip") and search.progress
    calibrate = read_options(parser.parse_args(["calibrate", "m.zip", "--no-progress"]), FitOptions)
    assert calibrate.observations == CalibrationSettings().n_observations and not calibrate.progress
    train = read_options(parser.parse_args(["train", "CartPole-v0", "--no-progress", "--net-arch", "8,8"]),
                         TrainOptions, out=Path("x"), timesteps=1)
    assert train == TrainOptions(out=Path("x"), timesteps=1, progress=False, net_arch=[8, 8])


def test_default_outputs_go_under_runs():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if action.dest == "out" and action.default is not None:
                assert Path(action.default).parts[0] == "runs", (name, action.default)
            if action.dest == "storage":
                assert "sqlite:///runs/" in action.help


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "CartPole-v0", "--timesteps", "0"], "argument --timesteps: must be a positive integer"),
        (["train", "CartPole-v0", "--ticks", "0"], "argument --ticks: must be a positive integer"),
        (["train", "CartPole-v0", "--ticks", "-1"], "argument --ticks: must be a positive integer"),
        (["train", "CartPole-v0", "--eval-episodes", "0"], "argument --eval-episodes: must be a positive integer"),
        (["train", "CartPole-v0", "--qat-steps", "-5"], "argument --qat-steps: must be 0 or a positive integer"),
        (["train", "CartPole-v0", "--net-arch", "64,0"], "layer sizes must be positive integers"),
        (["train", "CartPole-v0", "--bogus"], "unrecognized arguments: --bogus"),
        (["compare", "m.zip", "--episodes", "0"], "argument --episodes: must be a positive integer"),
        (["compare", "m.zip", "--tick-ms", "0"], "argument --tick-ms: must be positive"),
        (["search", "m.zip", "--stage1", "-1,2"], "multipliers must be positive"),
        (["search", "m.zip", "--stage1=0,1"], "multipliers must be positive"),
        (["search", "m.zip", "--final-episodes", "0"], "argument --final-episodes: must be a positive integer"),
        (["calibrate", "m.zip", "--observations", "0"], "argument --observations: must be a positive integer"),
        (["demo", "--episodes", "0"], "argument --episodes: must be a positive integer"),
    ],
)
def test_bad_values_are_refused_with_the_subcommand_usage(argv, message, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert f"usage: spiking-dqn {argv[0]}" in err and f"spiking-dqn {argv[0]}: error:" in err
    assert message in err


def test_negative_list_values_reach_their_check():
    assert join_negative_lists(["search", "m", "--stage1", "-1,2", "--seed", "-3"]) == [
        "search", "m", "--stage1=-1,2", "--seed", "-3"
    ]


def test_unknown_storage_scheme_is_named(capsys):
    assert main(["search", "missing.zip", "--env", "CartPole-v1", "--storage", "bogus://"]) == 2
    err = capsys.readouterr().err
    assert "unknown URL scheme 'bogus'" in err and "server is running" not in err


def test_a_text_file_named_npz_is_not_a_chip_program(tmp_path, capsys):
    fake = tmp_path / "program.npz"
    fake.write_text("not a program\n")
    assert main(["compare", "missing.zip", "--env", "CartPole-v1", "--program", str(fake)]) == 2
    err = capsys.readouterr().err
    assert "not a chip program file" in err and "allow_pickle" not in err and "unsafely" not in err


@pytest.mark.parametrize(
    "env_id, message",
    [("Pendulum-v1", "DQN needs a discrete action space"), ("NoSuchEnv-v0", "cannot make environment 'NoSuchEnv-v0'")],
)
def test_train_refuses_what_dqn_cannot_train_on(env_id, message, tmp_path, capsys):
    assert main(["train", env_id, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_env_id_is_inferred_from_the_eval_record(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"env_id": "MountainCar-v0"}))
    assert infer_env_id(tmp_path / "model.zip") == "MountainCar-v0"
    assert infer_env_id(tmp_path / "other" / "model.zip") is None
    assert infer_env_id(ROOT / "agents" / "trained" / "Acrobot-v1" / "model.zip") == "Acrobot-v1"


def test_progress_bar_stops_at_the_requested_total():
    model = DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), learning_starts=1000, train_freq=64,
                policy_kwargs=dict(net_arch=[8], ticks=4), seed=0)
    bar = BoundedProgressBar()
    model.learn(100, callback=bar)
    assert model.num_timesteps == 128  # whole rollouts of train_freq steps
    assert bar.pbar.n == 100


def test_each_warning_is_shown_once():
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        show_each_warning_once()
        for _ in range(3):
            with warnings.catch_warnings():  # as library code does; it resets the "once" registries
                gym.make("CartPole-v0").close()
    assert sum("out of date" in str(w.message) for w in log) == 1


def test_a_recipe_run_shows_each_warning_once():
    from agents.common import parse_args

    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        parse_args("CartPole-v0", 800, ["--timesteps", "800"])  # what every recipe of agents/ starts with
        for _ in range(4):
            with warnings.catch_warnings():
                gym.make("CartPole-v0").close()
    assert sum("out of date" in str(w.message) for w in log) == 1


def test_bare_command_lists_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: spiking-dqn")
    for command in ("train", "demo", "compare", "deploy", "search", "calibrate", "export"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in err.splitlines()), command
    assert "two-stage threshold grid search" in err


def test_help_texts_are_readable_and_true(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    search = " ".join(capsys.readouterr().out.split())  # as one line, whatever the terminal width
    assert "(default: 0.354, 0.5, 0.707, 1, 1.41, 2, 2.83, 4)" in search and "0.3535533905932738" not in search
    assert "(default: 0.841, 1, 1.19)" in search
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "QAT" not in capsys.readouterr().out  # export quantizes; it does not fine-tune


def test_search_defaults_are_the_search_settings_grids():
    from spiking_dqn.cli.fit import FitOptions
    from spiking_dqn.pipeline import SearchSettings

    options = FitOptions(model="m.zip")
    settings = SearchSettings()
    assert tuple(options.stage1) == settings.stage1_grid and tuple(options.stage2) == settings.stage2_factors


def test_a_rejected_deploy_creates_no_folder(tmp_path, trained_tiny_model, capsys):
    model = tmp_path / "model.zip"
    trained_tiny_model.save(model)
    out = tmp_path / "new" / "chip_program.npz"
    assert main(["deploy", str(model), "--lam", "-3", "--out", str(out)]) == 2
    assert "lambda" in capsys.readouterr().err
    assert not out.parent.exists()


def test_search_refuses_a_program_of_another_model(tmp_path, trained_tiny_model, capsys):
    import dataclasses

    from spiking_dqn import HardwarePolicy

    model = tmp_path / "model.zip"
    trained_tiny_model.save(model)
    program = HardwarePolicy.from_model(trained_tiny_model).program
    stale = dataclasses.replace(program, model_digest="ab" * 32).save(tmp_path / "stale.npz")
    argv = ["search", str(model), "--env", "CartPole-v1", "--program", str(stale), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"chip program {stale} was built from model abababababab, not from this model" in err
    assert "--allow-mismatch" in err and not (tmp_path / "s").exists()


def test_train_any_discrete_env_then_deploy_and_compare(tmp_path, capsys):
    out = tmp_path / "mc"
    assert main(["train", "MountainCar-v0", "--timesteps", "300", "--qat-steps", "0", "--eval-episodes", "1",
                 "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hyperparameters from the MountainCar-v0 entry of zoo_configs/dqn.yml" in printed
    assert "before QAT" not in printed  # --qat-steps 0: there is no QAT
    record = json.loads((out / "eval.json").read_text())
    assert record["env_id"] == "MountainCar-v0" and record["timesteps"] == 300 and record["qat"] is None
    assert record["command"].startswith("spiking-dqn train MountainCar-v0 --timesteps 300")
    assert "learning_rate" in (out / "README.md").read_text()
    program = out / "chip_program.npz"
    assert main(["deploy", str(out / "model.zip"), "--qat-steps", "0", "--out", str(program)]) == 0
    assert program.is_file()
    # --env is inferred from the eval.json that train wrote
    assert main(["compare", str(out / "model.zip"), "--program", str(program), "--episodes", "1", "--no-progress",
                 "--out", str(out / "compare")]) == 0
    report = json.loads((out / "compare" / "report.json").read_text())
    assert report["env_id"] == "MountainCar-v0" and report["n_episodes"] == 1
    assert report["program"]["source"].endswith("chip_program.npz")


def test_export_writes_a_nir_file_that_reads_back(tmp_path, capsys):
    from spiking_dqn.nir_read import read_nir
    from spiking_dqn.hardware.mapping import map_program
    from spiking_dqn.hardware.program import ChipProgram

    source = ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz"
    out = tmp_path / "deep" / "cartpole.nir"
    assert main(["export", str(source), "--nir", str(out)]) == 0
    captured = capsys.readouterr()
    program = ChipProgram.load(source)
    assert read_nir(out) == program
    assert f"NIR graph written to {out}" in captured.out
    assert map_program(program).summary() in captured.out
    assert "no reset by subtraction" in captured.err


def test_export_readout_lif_writes_the_integrator_as_a_lif_that_reads_back(tmp_path):
    import nir

    from spiking_dqn.hardware.program import ChipProgram
    from spiking_dqn.nir_read import read_nir

    source = ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz"
    out = tmp_path / "cartpole_lif.nir"
    assert main(["export", str(source), "--nir", str(out), "--readout", "lif", "--tick-ms", "0.1"]) == 0
    graph = nir.read(out)
    assert not any(isinstance(node, nir.IF) for node in graph.nodes.values())
    assert read_nir(out) == ChipProgram.load(source)


def test_export_quantizes_a_model(tmp_path, capsys):
    from spiking_dqn.nir_read import read_nir

    out = tmp_path / "acrobot.nir"
    model = ROOT / "agents" / "trained" / "Acrobot-v1" / "model.zip"
    assert main(["export", str(model), "--nir", str(out), "--lam", "32", "--tick-ms", "2"]) == 0
    program = read_nir(out)
    assert program.lambdas == [32.0, 32.0, 32.0] and program.layer_sizes == [12, 128, 128, 3]


def test_export_bad_input(tmp_path, capsys):
    program = str(ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz")
    assert main(["export", program, "--nir", str(tmp_path / "x.nir"), "--lam", "3"]) == 2
    assert "chip program file is already quantized" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npz"), "--nir", str(tmp_path / "x.nir")]) == 2
    assert "error:" in capsys.readouterr().err
    assert _exit_code(["export", program]) == 2
    assert "--nir" in capsys.readouterr().err
    assert not (tmp_path / "x.nir").exists()
