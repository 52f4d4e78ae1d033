"""The main job (`make demo`) end to end, on a tiny budget."""

import json

from spiking_dqn.cli import main


def test_demo_trains_deploys_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--timesteps", "1200", "--episodes", "2", "--qat-steps", "300", "--out", str(out)]) == 0
    for name in ["model.zip", "README.md", "eval.json", "chip_program.npz", "deployment.json", "model_qat.zip"]:
        assert (out / name).exists(), name
    for name in ["report.json", "report.md", "reward.png", "spike_raster.png"]:
        assert (out / "deployment" / name).exists(), name
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    record = json.loads((out / "deployment.json").read_text())
    assert 0.0 <= record["figures"]["action_agreement"] <= 1.0
    printed = capsys.readouterr().out
    assert "on the emulated chip (int8): mean reward" in printed
