"""Float vs chip comparison (``spiking_dqn.compare``, ``report``, ``measurement``) and the compare / deploy CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import HardwarePolicy, SpikingDQNPolicy, measurement
from spiking_dqn.cli import infer_env_id, main, parse_lambda
from spiking_dqn.compare import compare
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.report import Quantity

ENV = "CartPole-v0"
KINDS = {"measured", "estimated", "not measured"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory) -> Path:
    """A tiny spiking DQN, trained for 200 steps and saved."""
    th.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DQN(
            SpikingDQNPolicy,
            ENV,
            policy_kwargs={"net_arch": [16], "ticks": 6, "threshold": 0.5},
            learning_starts=0,
            seed=0,
            device="cpu",
        )
        model.learn(200)
    path = tmp_path_factory.mktemp("model") / "tiny.zip"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def mlp_model_path(tmp_path_factory) -> Path:
    """A plain (non-spiking) SB3 DQN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DQN("MlpPolicy", ENV, policy_kwargs={"net_arch": [8]}, device="cpu")
    path = tmp_path_factory.mktemp("mlp") / "mlp.zip"
    model.save(path)
    return path


def figures(tree, where=""):
    """Every ``{"value", "unit", "kind"}`` figure in a report dict, with its path."""
    if isinstance(tree, dict):
        if "kind" in tree and "value" in tree:
            yield where, tree
        else:
            for key, value in tree.items():
                yield from figures(value, f"{where}.{key}")


def test_compare_writes_labelled_report(tiny_model_path, tmp_path):
    model = DQN.load(tiny_model_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compare(model, ENV, n_episodes=2, seed=3, device="cpu", progress=False)
    assert model.policy.device.type == "cpu"
    # Agreement, recomputed independently: the float policy's visited states, its greedy
    # actions there, and the emulator's actions on them.
    from spiking_dqn.hardware import EmulatorBackend
    from spiking_dqn.rollouts import run_episodes

    seen, greedy = [], []

    def act(obs):
        actions, _ = model.predict(obs, deterministic=True)
        seen.append(obs.copy())
        greedy.append(actions)
        return actions

    for i in range(2):
        run_episodes(act, ENV, 1, seed=3 + i)
    obs, greedy = np.concatenate(seen), np.concatenate(greedy)
    chip_actions = EmulatorBackend(warn_saturation=False).run(report.program, obs).actions
    assert report.n_agreement_obs == len(obs)
    assert report.agreement == pytest.approx(float(np.mean(chip_actions == greedy)))
    assert len(report.float_rewards) == len(report.chip_rewards) == 2
    paths = report.write(tmp_path / "out")
    for name in ("report.json", "report.md", "reward.png", "spike_raster.png"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    for name in ("reward.png", "spike_raster.png"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC

    data = json.loads(paths["report.json"].read_text())
    for key in ("reward", "action_agreement", "latency", "activity", "energy", "program", "quantization"):
        assert key in data
    assert data["episode_seeds"] == [3, 4]
    assert data["reward"]["episodes"]["chip"]["value"] == report.chip_rewards
    found = dict(figures(data))
    assert len(found) >= 15
    for where, fig in found.items():
        assert fig["kind"] in KINDS, where
        assert (fig["value"] is None) == (fig["kind"] == "not measured"), where
    assert data["action_agreement"]["value"] == pytest.approx(report.agreement)
    assert data["action_agreement"]["kind"] == "measured"
    assert data["reward"]["float"]["mean"]["kind"] == "measured"
    assert data["latency"]["float"]["median"]["kind"] == "measured"
    assert data["latency"]["emulator"]["median"]["kind"] == "measured"
    assert data["latency"]["chip"]["median"]["kind"] == "estimated"
    assert data["latency"]["chip"]["median"]["value"] == pytest.approx(6 * 1e-3)
    assert data["energy"]["chip"]["total"]["kind"] == "estimated"
    assert data["energy"]["chip"]["total"]["value"] > 0
    # No power reading on the CPU: the float energy and the ratio are not invented.
    assert data["energy"]["float"] == {**data["energy"]["float"], "value": None, "kind": "not measured"}
    assert data["energy"]["float_over_chip"]["value"] is None
    populations = data["activity"]["spikes_per_population"]
    assert list(populations) == ["input", "hidden1", "output"]
    assert data["program"]["lambdas"] == report.program.lambdas
    assert len(data["quantization"]["layers"]) == 2

    md = paths["report.md"].read_text()
    for text in ("measured", "estimated", "not measured", "reward.png", "spike_raster.png", "lambdas", "clipped"):
        assert text in md
    sizes = report.program.layer_sizes
    assert data["chip_resources"]["cores"] == sum(-(-n // 250) for n in sizes)
    assert [p["neurons"] for p in data["chip_resources"]["populations"]] == sizes
    assert data["chip_resources"]["fits"] is True and data["chip_resources"]["kind"] == "estimated"
    assert "## Chip resources" in md and f"{data['chip_resources']['cores']} of 152 cores" in md


def test_measured_float_energy_gives_a_ratio(tiny_model_path, monkeypatch):
    """The CUDA power path, with NVML and CUDA faked (no GPU is needed)."""
    monkeypatch.setattr(th.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(th.cuda, "power_draw", lambda device=None: 50_000)  # mW
    monkeypatch.setattr(measurement, "POWER_SAMPLE_S", 0.02)
    energy, note = measurement.measure_float_energy(lambda i: time.sleep(1e-4), th.device("cuda"))
    assert energy is not None and 50 * 1e-4 <= energy < 50 * 5e-3
    assert note.startswith("measured") and "50.0 W" in note

    def no_nvml(device=None):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(th.cuda, "power_draw", no_nvml)
    energy, note = measurement.measure_float_energy(lambda i: None, th.device("cuda"))
    assert energy is None and note.startswith("not measured")
    assert measurement.measure_float_energy(lambda i: None, th.device("cpu"))[0] is None

    model = DQN.load(tiny_model_path, device="cpu")
    report = compare(model, ENV, n_episodes=1, device="cpu", progress=False)
    measured = dataclasses.replace(report, float_energy_j=0.1, float_energy_note="measured: test")
    data = measured.to_dict()["energy"]
    assert data["float"]["kind"] == "measured" and data["float"]["value"] == 0.1
    ratio = data["float_over_chip"]
    assert ratio["kind"] == "estimated"
    assert ratio["value"] == pytest.approx(0.1 / data["chip"]["total"]["value"])


def test_compare_on_a_fake_spinnaker2_chip(tiny_model_path, monkeypatch, tmp_path, capsys):
    """The spinnaker2 path, with py-spinnaker2 replaced by the fake chip of the translation tests."""
    from test_spinnaker2_translation import FakeChip, install_fake_spinnaker2

    install_fake_spinnaker2(monkeypatch, FakeChip)
    model = DQN.load(tiny_model_path, device="cpu")
    emulated = compare(model, ENV, lam=4.0, n_episodes=1, device="cpu", progress=False)
    on_chip = compare(
        model, ENV, lam=4.0, backend="spinnaker2", backend_options={"eth_ip": "10.0.0.1"},
        n_episodes=1, device="cpu", progress=False,
    )
    assert FakeChip.instances and FakeChip.instances[-1].eth_ip == "10.0.0.1"
    assert on_chip.chip_rewards == emulated.chip_rewards
    assert on_chip.agreement == emulated.agreement
    data = on_chip.to_dict()
    assert data["backend"] == "spinnaker2" and "emulator" not in data["latency"]
    assert data["latency"]["chip"]["median"]["kind"] == "measured"
    assert data["latency"]["chip"]["ticks_x_tick"]["kind"] == "estimated"
    assert data["activity"]["synaptic_events"]["kind"] == "measured"
    assert data["energy"]["chip"]["total"]["kind"] == "estimated"

    # The CLI passes --eth-ip through; without py-spinnaker2 it fails at once with the install hint.
    out = tmp_path / "s2"
    argv = ["compare", str(tiny_model_path), "--env", ENV, "--backend", "spinnaker2", "--eth-ip", "10.0.0.2",
            "--episodes", "1", "--lam", "4", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(argv) == 0 and (out / "report.json").is_file()
    monkeypatch.setitem(sys.modules, "spinnaker2", None)
    assert main(argv) == 2
    assert "py-spinnaker2" in capsys.readouterr().err


def test_compare_uses_a_given_program(tiny_model_path, tmp_path):
    model = DQN.load(tiny_model_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = HardwarePolicy.from_model(model, lam=5.0).program
    path = program.save(tmp_path / "prog.npz")
    report = compare(model, ENV, program=path, n_episodes=1, device="cpu", progress=False)
    assert report.program == program and report.quantization is None
    assert str(path) in report.program_source
    assert report.to_dict()["program"]["lambdas"] == [5.0, 5.0]


def test_compare_rejects_a_mismatched_env(tiny_model_path):
    model = DQN.load(tiny_model_path, device="cpu")
    with pytest.raises(ValueError, match=r"takes observations of shape \(4,\)") as info:
        compare(model, "Acrobot-v1", n_episodes=1, device="cpu", progress=False)
    assert "-D" not in str(info.value)


def _another_model(model: DQN) -> DQN:
    """The model with one weight changed (the same object, changed in place: load the model afresh for this)."""
    with th.no_grad():
        model.policy.q_net.q_net.readout.weight[0, 0] += 0.5
    return model


def test_compare_refuses_a_program_built_from_another_model(tiny_model_path, tmp_path):
    model = DQN.load(tiny_model_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = HardwarePolicy.from_model(model, lam=5.0).program
    path = program.save(tmp_path / "prog.npz")
    other = _another_model(DQN.load(tiny_model_path, device="cpu"))
    with pytest.raises(ValueError, match=r"prog.npz was built from model [0-9a-f]{12}, not from this model") as info:
        compare(other, ENV, program=path, n_episodes=1, device="cpu", progress=False)
    assert "\n" not in str(info.value) and "allow_mismatch" in str(info.value)
    with pytest.warns(UserWarning, match="was built from model"):
        report = compare(other, ENV, program=path, n_episodes=1, device="cpu", progress=False, allow_mismatch=True)
    assert report.program == program
    with pytest.warns(UserWarning, match="records no model digest"):
        compare(model, ENV, program=dataclasses.replace(program, model_digest=None), n_episodes=1, device="cpu",
                progress=False)


def test_cli_compare_refuses_a_stale_program_unless_asked(tiny_model_path, tmp_path, capsys):
    model = DQN.load(tiny_model_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = HardwarePolicy.from_model(model, lam=5.0).program.save(tmp_path / "prog.npz")
    retrained = _another_model(DQN.load(tiny_model_path, device="cpu"))
    retrained.save(tmp_path / "model.zip")
    argv = ["compare", str(tmp_path / "model.zip"), "--env", ENV, "--program", str(program), "--episodes", "1",
            "--out", str(tmp_path / "cmp"), "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was built from model" in err and "--allow-mismatch" in err
    with pytest.warns(UserWarning, match="was built from model"):
        assert main([*argv, "--allow-mismatch"]) == 0


def test_compare_says_which_grid_quantized_the_model(tiny_model_path):
    model = DQN.load(tiny_model_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compare(model, ENV, lam=None, n_episodes=1, device="cpu", progress=False)
    assert "None" not in report.program_source and "lam='auto'" in report.program_source


def test_quantity_format():
    assert Quantity(None, "J", "not measured").format() == "not measured"
    assert Quantity(0.002, "s", "estimated").format(1e3, "ms") == "2 ms (estimated)"


def test_cli_compare_end_to_end(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        ["compare", str(tiny_model_path), "--env", ENV, "--episodes", "2", "--lam", "4,4",
         "--out", str(out), "--device", "cpu", "--no-progress"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "agreement" in printed and str(out) in printed
    data = json.loads((out / "report.json").read_text())
    assert data["program"]["lambdas"] == [4.0, 4.0]
    assert data["n_episodes"] == 2
    assert (out / "reward.png").is_file() and (out / "spike_raster.png").is_file()


def test_cli_deploy_writes_program(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "deep" / "chip_program.npz"
    rc = main(["deploy", str(tiny_model_path), "--lam", "3", "--out", str(out), "--threshold-scale", "1.5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "clipped" in printed and str(out) in printed
    assert "chip resources (one SpiNNaker2)" in printed and "of 152 cores" in printed
    program = ChipProgram.load(out)
    assert program.lambdas == [3.0, 3.0]
    np.testing.assert_allclose(program.thresholds[0], 3.0 * 0.5 * 1.5)
    assert float(program.thresholds[-1][0]) == 5000.0


@pytest.mark.parametrize("command", ["compare", "deploy"])
def test_cli_rejects_non_spiking_model(mlp_model_path, tmp_path, capsys, command):
    argv = [command, str(mlp_model_path), "--out", str(tmp_path / "x")]
    if command == "compare":
        argv += ["--env", ENV, "--episodes", "1", "--no-progress"]
    rc = main(argv)
    assert rc != 0
    err = capsys.readouterr().err
    assert "SpikingDQNPolicy" in err and "error:" in err
    assert not (tmp_path / "x").exists()


def test_cli_compare_needs_env_and_chip_address(tiny_model_path, capsys):
    assert main(["compare", str(tiny_model_path), "--episodes", "1"]) == 2
    assert "--env is required" in capsys.readouterr().err
    assert main(["compare", str(tiny_model_path), "--env", ENV, "--backend", "spinnaker2"]) == 2
    assert "--eth-ip" in capsys.readouterr().err
    assert main(["compare", str(tiny_model_path) + ".missing", "--env", ENV]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["compare", "runs/nope/model.zip"]) == 2  # the missing file, not the --env it would infer
    err = capsys.readouterr().err
    assert "no model file at runs/nope/model.zip" in err and "--env" not in err


def test_lambda_and_env_parsing(tmp_path):
    assert parse_lambda("auto") == "auto"
    assert parse_lambda("3") == 3.0
    assert parse_lambda("3,2.5,32") == [3.0, 2.5, 32.0]
    with pytest.raises(Exception, match="invalid lambda"):
        parse_lambda("three")
    shipped = tmp_path / "agents" / "trained" / "Acrobot-v1" / "model.zip"
    assert infer_env_id(shipped) == "Acrobot-v1"
    assert infer_env_id(tmp_path / "model.zip") is None


SHIPPED = Path(__file__).resolve().parents[1] / "agents" / "trained" / ENV / "model.zip"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped CartPole-v0 agent")
def test_cli_compare_infers_env_of_shipped_agent(tmp_path):
    out = tmp_path / "shipped"
    argv = ["compare", str(SHIPPED), "--episodes", "1", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    assert json.loads((out / "report.json").read_text())["env_id"] == ENV
