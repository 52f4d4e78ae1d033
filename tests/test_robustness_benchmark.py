"""The robustness study (``benchmarks/robustness*.py``): tiny runs and its verdicts.

The study trains agents for minutes each; here one or two seeds train a few hundred steps
and are fitted with two variants on a few episodes, to check the files, the merging of rows
across runs and that ``--jobs 2`` measures what ``--jobs 1`` does. The target verdicts are
checked on made-up rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _benchmarks import benchmark_module

from spiking_dqn.recipes.versions import machine_line

TINY = ["--env", "CartPole-v0", "--timesteps", "300", "--qat-steps", "100", "--episodes", "2"]
#: Row fields that differ between runs of the same measurement (times, the command, where the agent was cached,
#: the commit: others commit to the shared tree between the two runs).
UNSTABLE = ("train_wall_time_s", "fit_wall_time_s", "command", "train_command", "model", "code")


@pytest.fixture(scope="module")
def study():
    with benchmark_module("robustness", "robustness_study") as module:  # the --jobs workers look it up too
        yield module


@pytest.fixture(scope="module")
def tables(study):
    return sys.modules["robustness_tables"]


@pytest.fixture(scope="module")
def agents(study):
    return sys.modules["robustness_agents"]


def stable(value):
    """``value`` without the fields that differ between runs of the same measurement."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in UNSTABLE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "robustness.json").read_text())["rows"]


def test_a_tiny_run_writes_its_files_and_later_runs_merge_their_rows(study, tmp_path):
    work, out = str(tmp_path / "work"), tmp_path / "out"
    assert study.main([*TINY, "--seeds", "0", "--variants", "ptq", "td-qat", "--work", work, "--out", str(out)]) == 0
    for name in ("robustness.json", "robustness.md", "robustness.png"):
        assert (out / name).stat().st_size > 0
    (row,) = rows_of(out)
    assert (row["env_id"], row["seed"], row["weight_bits"], list(row["fits"])) == ("CartPole-v0", 0, 8, ["ptq", "td-qat"])
    fit = row["fits"]["td-qat"]
    assert fit["normalised"] == pytest.approx(fit["chip_reward"] / row["float_reward"])  # CartPole: R_worst = 0
    assert row["episodes"] == 2 and "--timesteps 300" in row["train_command"] and "--qat-steps 0" in row["train_command"]
    # the package's one machine line, with the workers' thread count: its kernels decide the training's rounding
    machine = json.loads((out / "robustness.json").read_text())["machine"]
    assert machine == machine_line(threads="1 torch thread per process") and machine.endswith(" kernels")
    text = (out / "robustness.md").read_text()
    assert "`python benchmarks/robustness.py --env CartPole-v0 --seeds 0`" in text and "| seed | float as trained |" in text

    # another seed: both rows; the first agent again with another variant: its earlier fits kept, not retrained
    assert study.main([*TINY, "--seeds", "1", "--variants", "ptq", "--work", work, "--out", str(out)]) == 0
    assert [r["seed"] for r in rows_of(out)] == [0, 1]
    log = tmp_path / "work" / "CartPole-v0" / "seed0.log"
    trained_at = log.stat().st_mtime_ns
    assert study.main([*TINY, "--seeds", "0", "--variants", "default", "--work", work, "--out", str(out)]) == 0
    rows = rows_of(out)
    assert [(r["seed"], sorted(r["fits"])) for r in rows] == [(0, ["default", "ptq", "td-qat"]), (1, ["ptq"])]
    assert rows[0]["fits"]["td-qat"] == fit and log.stat().st_mtime_ns == trained_at
    # the same command's agent with other weights (a retraining on another CPU): its earlier fits are not kept
    seed0, seed1 = (tmp_path / "work" / "CartPole-v0" / f"seed{s}" / "model_trained.zip" for s in (0, 1))
    seed0.write_bytes(seed1.read_bytes())
    assert study.main([*TINY, "--seeds", "0", "--variants", "ptq", "--work", work, "--out", str(out)]) == 0
    assert [(r["seed"], sorted(r["fits"])) for r in rows_of(out)] == [(0, ["ptq"]), (1, ["ptq"])]
    assert rows_of(out)[0]["model_digest"] == rows_of(out)[1]["model_digest"]
    # 4-bit rows are rows of their own
    assert study.main([*TINY, "--seeds", "1", "--variants", "ptq", "--weight-bits", "4", "--work", work,
                       "--out", str(out)]) == 0
    assert [(r["seed"], r["weight_bits"], r["variant"]) for r in rows_of(out)] == [
        (0, 8, "seed 0"), (1, 8, "seed 1"), (1, 4, "seed 1, 4-bit")]
    assert "CartPole-v0, 4-bit weights" in (out / "robustness.md").read_text()


def test_two_processes_measure_what_one_does(study, tmp_path):
    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        assert study.main([*TINY, "--seeds", "0-1", "--variants", "ptq", "td-qat", "--jobs", jobs,
                           "--work", str(tmp_path / f"work{jobs}"), "--out", str(out)]) == 0
        runs[jobs] = stable(rows_of(out))
    assert [r["seed"] for r in runs["2"]] == [0, 1]
    assert runs["1"] == runs["2"]


def test_update_docs_writes_the_page_between_its_markers_only(study, tmp_path, monkeypatch):
    pages = sys.modules["docs_pages"]
    monkeypatch.setattr(pages, "DOCS", tmp_path)
    (tmp_path / "benchmarks.md").write_text("# B\n\n<!-- robustness:begin -->\nSTALE SECTION\n<!-- robustness:end -->\nAfter.\n")
    out = tmp_path / "out"
    out.mkdir()
    row = {"env_id": "CartPole-v0", "variant": "seed 3", "seed": 3, "weight_bits": 8, "episodes": 100,
           "eval_seed": 12345, "float_reward": 200.0, "random_reward": 22.0, "worst": 0.0, "train_wall_time_s": 100.0,
           "train_command": "x", "fits": {"td-qat": {"chip_reward": 185.0, "normalised": 0.925, "fit_wall_time_s": 20.0}}}
    (out / "robustness.json").write_text(json.dumps({"rows": [row]}))
    assert study.main(["--no-run", "--update-docs", "--out", str(out)]) == 0
    text = (tmp_path / "benchmarks.md").read_text()
    assert "STALE SECTION" not in text and text.startswith("# B\n") and text.endswith("<!-- robustness:end -->\nAfter.\n")
    assert "| 3 | 200.0 | 100 s | 185.0 (92.5%), 20 s |" in text and "robustness.png)" in text
    assert "not met" in text  # one seed under 95% already fails "95% on every seed"


def test_update_card_writes_the_seed_report_of_a_card_that_has_one(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    card = tmp_path / "agents" / "trained" / "CartPole-v0" / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text("# Card\n\n<!-- seeds:begin -->\nSTALE SECTION\n<!-- seeds:end -->\n")
    row = {"env_id": "CartPole-v0", "variant": "seed 3", "seed": 3, "weight_bits": 8, "episodes": 100,
           "eval_seed": 12345, "float_reward": 200.0, "random_reward": 22.0, "worst": 0.0, "train_wall_time_s": 100.0,
           "fits": {"ptq": {"chip_reward": 200.0, "normalised": 1.0, "fit_wall_time_s": 1.0}}}
    rows = [row, {**row, "seed": 4, "variant": "seed 4"}, {**row, "seed": 6, "variant": "seed 6"}]
    study.update_cards([*rows, {**row, "env_id": "Acrobot-v1"}])
    text = card.read_text()
    assert "STALE SECTION" not in text and "## Seed report" in text and "| 3 | 200.0 | 100 s | 200.0 (100.0%), 1 s |" in text
    assert "`python benchmarks/robustness.py --env CartPole-v0 --seeds 3-4 6`" in text
    assert "target reward 195 (`envs.rewards.TARGET_REWARD`) is reached by the float agent as trained on 3 of 3" in text
    assert not (tmp_path / "agents" / "trained" / "Acrobot-v1").exists()  # no card, no section: nothing written


def test_the_recipes_target_reward_is_counted_per_seed_float_and_chip(tables):
    rows = [{"env_id": "CartPole-v0", "seed": s, "weight_bits": 8, "float_reward": f, "random_reward": 20.0,
             "train_wall_time_s": 1.0, "fits": {"default": {"chip_reward": c, "normalised": c / f},
                                                "ptq": {"chip_reward": 10.0, "normalised": 0.05}}}
            for s, (f, c) in enumerate([(200.0, 195.0), (194.9, 199.0), (200.0, 194.9)])]
    reached = tables.summarise(rows, ["ptq", "default"])["CartPole-v0, 8-bit"]["reward_target"]
    assert reached == {"reward": 195.0, "seeds": 3, "float_as_trained": 2, "chip": {"ptq": [0, 3], "default": [2, 3]}}
    assert tables.summarise([{**r, "env_id": "Pong-v5"} for r in rows], ["ptq"])["Pong-v5, 8-bit"]["reward_target"] is None


def fits(env_id, values, float_reward=200.0, random_reward=20.0, bits=8):
    return [{"env_id": env_id, "seed": s, "weight_bits": bits, "float_reward": float_reward,
             "random_reward": random_reward, "train_wall_time_s": 100.0,
             "fits": {"v": {"normalised": v, "fit_wall_time_s": 10.0}, "td-qat": {"normalised": 1.0,
                                                                                "fit_wall_time_s": 20.0}}}
            for s, v in enumerate(values)]


def test_targets_are_met_not_met_or_open(tables):
    cartpole = tables.TARGETS[("CartPole-v0", 8)]
    assert tables.verdict(fits("CartPole-v0", [1.0] * 9 + [0.96]), "v", cartpole)["status"] == "met"
    assert tables.verdict(fits("CartPole-v0", [1.0] * 8 + [0.96, 0.97]), "v", cartpole)["status"] == "not met"
    assert tables.verdict(fits("CartPole-v0", [1.0] * 9 + [0.94]), "v", cartpole)["status"] == "not met"
    assert tables.verdict(fits("CartPole-v0", [1.0, 0.97]), "v", cartpole)["status"] == "open"
    assert tables.verdict(fits("CartPole-v0", [0.9, 1.0]), "v", cartpole)["status"] == "not met"  # already failed
    four = tables.TARGETS[("CartPole-v0", 4)]
    assert tables.verdict(fits("CartPole-v0", [1.0] * 8 + [0.5, 0.5], bits=4), "v", four)["status"] == "met"
    # a seed whose float agent is no better than a random policy is not held to the target
    lander = tables.TARGETS[("LunarLander-v3", 8)]
    rows = fits("LunarLander-v3", [1.0] * 4) + fits("LunarLander-v3", [None], float_reward=-300.0, random_reward=-200.0)
    result = tables.verdict(rows, "v", lander)
    assert result["status"] == "met" and result["seeds_counted"] == 4


def test_normalised_reward_and_wall_time_ratio(tables):
    assert tables.normalised(150.0, 200.0, tables.worst_reward("CartPole-v0", 22.0)) == pytest.approx(0.75)
    assert tables.normalised(-100.0, -80.0, tables.worst_reward("Acrobot-v1", -499.0)) == pytest.approx(400 / 420)
    assert tables.worst_reward("LunarLander-v3", -180.0) == -180.0  # no bounded minimum: the random policy's
    assert tables.normalised(-200.0, -200.0, tables.worst_reward("MountainCar-v0", -200.0)) is None
    times = tables.wall_times(fits("CartPole-v0", [1.0]), "v")
    assert times["max_ratio"] == pytest.approx(110 / 120) and times["met"]


def test_seed_ranges(study):
    assert study.parse_seeds(["0-3", "7", "2"]) == [0, 1, 2, 3, 7]


def test_a_reselect_below_one_is_refused_before_any_training(study, capsys):
    with pytest.raises(SystemExit):
        study.parse_args(["--reselect", "0"])
    assert "argument --reselect: must be a positive integer, got 0" in capsys.readouterr().err
    assert study.parse_args(["--reselect", "5"]).reselect == 5


def test_each_agent_is_written_when_it_is_done_and_a_failed_one_is_reported(study, tmp_path, monkeypatch):
    out = tmp_path / "out"
    written = []

    def measure(job):
        if job.seed == 1:
            assert [r["seed"] for r in rows_of(out)] == [0]  # the first agent is on disk before the second ends
            raise RuntimeError("training diverged")
        return {"env_id": job.env_id, "variant": study.point(job.seed, job.weight_bits), "seed": job.seed,
                "weight_bits": job.weight_bits, "episodes": 2, "eval_seed": 12345, "float_reward": 200.0,
                "train_wall_time_s": 1.0, "train_command": "x", "model_digest": f"weights {job.seed}",
                "fits": {"ptq": {"chip_reward": 190.0, "fit_wall_time_s": 1.0}}}

    monkeypatch.setattr(study, "measure", measure)
    monkeypatch.setattr(study, "random_reward", lambda env_id, episodes, seed: written.append(env_id) or 20.0)
    assert study.main(["--seeds", "0-1", "--variants", "ptq", "--episodes", "2", "--out", str(out)]) == 0
    data = json.loads((out / "robustness.json").read_text())
    assert [r["seed"] for r in data["rows"]] == [0] and data["rows"][0]["fits"]["ptq"]["normalised"] == 0.95
    assert len(data["skipped"]) == 1 and "seed 1" in data["skipped"][0] and "training diverged" in data["skipped"][0]
    assert written == ["CartPole-v0"]  # the random policy is measured once per task and run


def test_each_variant_pins_its_fine_tuning_whatever_the_package_defaults(study):
    class Model:  # the learning-rate schedule is all the variants read from the model
        lr_schedule = staticmethod(lambda progress: 5e-4)

    job = study.Job("CartPole-v0", 0, 8, (), 2, Path("."))
    settings = {name: make(job, Model()) for name, make in study.VARIANTS.items()}
    assert settings["ptq"]["qat"].steps == 0 and settings["ptq-search"]["qat"].steps == 0
    td, small = settings["td-qat"]["qat"], settings["td-qat-small"]["qat"]
    assert (td.mode, td.steps, td.learning_rate, td.check_episodes) == ("online", 10_000, 1e-4, 20)  # CartPole's QAT rate
    assert (small.mode, small.steps) == ("online", 10_000) and small.learning_rate == pytest.approx(2e-5)
    assert settings["distill"]["qat"].mode == "distill" and settings["default"] == {}
    acrobot = study.VARIANTS["td-qat"](study.Job("Acrobot-v1", 0, 8, (), 2, Path(".")), Model())["qat"]
    assert acrobot.learning_rate == 5e-4  # no QAT rate of its own: the training's final one


def test_a_cached_agent_is_reused_only_for_the_recipe_that_trained_it(study, tmp_path):
    """The command names the recipe, not what it was: a changed entry (steps, hyperparameters) retrains."""
    folder, command, params = tmp_path / "seed0", "spiking-dqn train MountainCar-v0 --seed 0", {"gamma": 0.98}
    folder.mkdir()
    assert not study.cached(folder, command, params, 200)  # nothing trained yet
    (folder / "eval.json").write_text(json.dumps({"timesteps": 120}))
    (folder / "command.txt").write_text(command + "\n")
    # a folder from before recipe.json: its command and its recorded steps decide
    assert study.cached(folder, command, params, 120) and not study.cached(folder, command, params, 200)
    (folder / study.RECIPE_NAME).write_text(json.dumps({"timesteps": 120, "hyperparams": {"gamma": 0.98}}))
    assert study.cached(folder, command, params, 120)
    assert not study.cached(folder, command, {"gamma": 0.99}, 120)
    assert not study.cached(folder, command + " --timesteps 5", params, 120)


def test_training_commands_name_the_work_folder_relative_to_the_repository(agents, tmp_path):
    """Commands are recorded with --out relative to the repository (the same in every clone); one
    recorded before with this clone's absolute folder is the same command."""
    inside = agents.ROOT / "runs" / "robustness" / "CartPole-v0" / "seed0"
    assert agents.repo_relative(inside) == "runs/robustness/CartPole-v0/seed0"
    assert agents.repo_relative(tmp_path) == str(tmp_path)  # outside the repository: as given
    before = f"spiking-dqn train CartPole-v0 --seed 0 --qat-steps 0 --no-progress --out {inside}"
    now = "spiking-dqn train CartPole-v0 --seed 0 --qat-steps 0 --no-progress --out runs/robustness/CartPole-v0/seed0"
    assert agents.portable(before) == now and agents.portable(now) == now
    # a cached agent and a row recorded with the absolute folder are taken as the same agent's
    (tmp_path / "eval.json").write_text(json.dumps({"timesteps": 120}))
    (tmp_path / "command.txt").write_text(before + "\n")
    assert agents.cached(tmp_path, now, {}, 120)
    previous = tmp_path / "robustness.json"
    fits = {"ptq": {"chip_reward": 1.0}}
    old = {"env_id": "CartPole-v0", "variant": "seed 0", "train_command": before, "model_digest": "d", "fits": fits}
    previous.write_text(json.dumps({"rows": [old]}))
    new = {**old, "train_command": now, "fits": {"default": {"chip_reward": 2.0}}}
    assert sorted(agents.keep_other_variants(previous, [new])[0]["fits"]) == ["default", "ptq"]
