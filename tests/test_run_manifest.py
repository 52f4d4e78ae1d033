"""The manifest of a training folder (``run.json``, :mod:`spiking_dqn.recipes.manifest`) and the loaders' check of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spiking_dqn.cli import CLIError
from spiking_dqn.cli.loading import infer_env_id, load_spiking_model, require_env_id
from spiking_dqn.recipes.manifest import (
    MANIFEST_NAME,
    RunFolderError,
    begin_run,
    check_run_folder,
    finish_run,
    moving_to,
    read_manifest,
)
from spiking_dqn.recipes.run_folder import move_previous_run

ROOT = Path(__file__).resolve().parents[1]
#: The shipped training folders: every folder of agents/trained with an eval.json.
SHIPPED = sorted(p.parent for p in (ROOT / "agents" / "trained").rglob("eval.json"))
AGENT = ROOT / "agents" / "trained" / "CartPole-v0"


def _run(folder: Path, content: str = "a") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    begin_run(folder)
    for name in ("model.zip", "eval.json", "README.md"):
        (folder / name).write_text(f"{name} of run {content}")
    finish_run(folder, f"train {content}")


def test_the_shipped_training_folders_hold_one_complete_run():
    assert {p.relative_to(ROOT / "agents" / "trained").as_posix() for p in SHIPPED} >= {"CartPole-v0", "Acrobot-v1"}
    for folder in SHIPPED:  # a manifest, and every file the one it records (no warning, no refusal)
        assert check_run_folder(folder) is None, folder
        manifest = read_manifest(folder)
        assert manifest["complete"] and {"model.zip", "eval.json"} <= set(manifest["files"]), folder


def test_a_complete_run_records_its_files_but_the_card(tmp_path):
    _run(tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest["complete"] and manifest["command"] == "train a"
    assert sorted(manifest["files"]) == ["eval.json", "model.zip"]  # README.md: later commands add sections
    assert check_run_folder(tmp_path) is None
    (tmp_path / "README.md").write_text("a deployment section added")
    (tmp_path / "chip_program.npz").write_text("written by deploy after the run")
    assert check_run_folder(tmp_path) is None


@pytest.mark.parametrize("damage", ["changed", "incomplete", "not json", "other format"])
def test_a_folder_that_is_not_one_complete_run_is_refused_in_one_line(tmp_path, damage):
    _run(tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    if damage == "changed":  # a file of another run beside this run's manifest
        (tmp_path / "eval.json").write_text("eval.json of run b")
        match = "eval.json is not the file of run"
    elif damage == "incomplete":
        begin_run(tmp_path)
        match = "has not finished"
    elif damage == "not json":
        manifest.write_text("{")
        match = "not a run manifest"
    else:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 99}))
        match = "not a run manifest of this version"
    with pytest.raises(RunFolderError, match=match) as caught:
        check_run_folder(tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(CLIError, match=match):
        require_env_id(None, tmp_path / "model.zip")
    with pytest.raises(CLIError, match=match):
        load_spiking_model(tmp_path / "model.zip")


def test_a_folder_written_before_manifests_loads_with_one_warning(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"env_id": "CartPole-v1"}))
    with pytest.warns(UserWarning, match="written before run manifests") as caught:
        assert infer_env_id(tmp_path / "model.zip") == "CartPole-v1"
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    (tmp_path / "eval.json").unlink()
    assert check_run_folder(tmp_path) is None  # a model.zip alone is no training folder


def test_a_shipped_agent_loads_without_a_warning(recwarn):
    model = AGENT / "model.zip"
    assert require_env_id(None, model) == "CartPole-v0"
    load_spiking_model(model)
    assert not [w for w in recwarn if "manifest" in str(w.message)]


def test_a_new_run_keeps_the_previous_manifest_with_the_previous_files(tmp_path):
    _run(tmp_path, "a")
    first = read_manifest(tmp_path)
    (tmp_path / "eval.json").rename(tmp_path / "model_trained.zip")  # a marker of a run
    message = move_previous_run(tmp_path)
    assert message is not None
    previous = next(tmp_path.glob("previous-*"))
    assert read_manifest(previous) == first
    now = read_manifest(tmp_path)
    assert not now["complete"] and "moving_to" not in now and now["run_id"] != first["run_id"]
    assert {p.name for p in tmp_path.iterdir()} == {previous.name, MANIFEST_NAME}


def test_a_move_interrupted_by_a_kill_is_finished_into_the_same_folder(tmp_path):
    _run(tmp_path, "a")
    first = read_manifest(tmp_path)
    target = tmp_path / "previous-x"
    target.mkdir()
    begin_run(tmp_path, previous=target)  # then killed after moving one file
    (tmp_path / "README.md").rename(target / "README.md")
    assert moving_to(tmp_path) == target
    with pytest.raises(RunFolderError, match="has not finished"):
        check_run_folder(tmp_path)
    move_previous_run(tmp_path)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "eval.json", "model.zip", MANIFEST_NAME]
    assert read_manifest(target) == first and check_run_folder(target) is None
    assert len(list(tmp_path.glob("previous-*"))) == 1


def test_resume_keeps_the_run_id_of_the_interrupted_run(tmp_path):
    run_id = begin_run(tmp_path)
    assert begin_run(tmp_path, resume=True) == run_id
    finish_run(tmp_path, "train")
    assert read_manifest(tmp_path)["run_id"] == run_id
    assert begin_run(tmp_path, resume=True) != run_id  # a complete run is not resumed


def test_a_copied_shipped_folder_with_a_replaced_model_is_refused(tmp_path):
    folder = tmp_path / "agent"
    shutil.copytree(AGENT, folder, ignore=shutil.ignore_patterns("deployment", "low_energy", "w4", "ternary"))
    shutil.copyfile(AGENT / "low_energy" / "model.zip", folder / "model.zip")
    with pytest.raises(CLIError, match="model.zip is not the file of run"):
        load_spiking_model(folder / "model.zip")
