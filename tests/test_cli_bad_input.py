"""Bad invocations of ``spiking-dqn`` end in one line and exit status 2 (1 for a file that cannot be written or
memory running out), before any work, never in a traceback (issue 27); ``--debug`` shows the traceback."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from spiking_dqn.cli import main
from spiking_dqn.hardware.program_fields import MAX_POPULATION_NEURONS, MAX_TICKS

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "agents" / "trained" / "CartPole-v0" / "model.zip")
PROGRAM = str(ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz")
SEED = 27


def _bad_paths(tmp: Path) -> dict[str, str]:
    """Output paths that cannot be written: a folder where a file goes, under a file, under /dev/null."""
    afile = tmp / "afile"
    afile.write_text("x")
    return {"folder": str(tmp), "under_file": str(afile / "x.out"), "under_devnull": "/dev/null/x.out",
            "file": str(afile)}


def _invocations(tmp: Path) -> list[list[str]]:
    """About fifty bad invocations over every command, part of them drawn at random (seeded)."""
    p = _bad_paths(tmp)
    rng = random.Random(SEED)
    calls = []
    for where in ("folder", "under_file", "under_devnull"):
        calls += [["deploy", MODEL, "--out", p[where]], ["export", PROGRAM, "--nir", p[where]],
                  ["search", MODEL, "--storage", f"sqlite:///{p[where]}"]]
    for where in ("file", "under_file", "under_devnull"):
        calls += [["train", "CartPole-v0", "--out", p[where]], ["train", "CartPole-v0", "--tensorboard-log", p[where]],
                  ["demo", "--out", p[where]], ["compare", MODEL, "--out", p[where]],
                  ["calibrate", MODEL, "--out", p[where]], ["search", MODEL, "--out", p[where]]]
    calls += [["deploy", MODEL, "--env", "NoSuchEnv-v0"], ["train", "NoSuchEnv-v0"], ["demo", "--env", "NoSuch-v3"],
              ["compare", MODEL, "--env", "nosuchmodule:Env-v0"], ["search", MODEL, "--storage", "nosuchdb://x"]]
    for command in (["train", "CartPole-v0"], ["deploy", MODEL], ["demo"], ["compare", MODEL]):
        calls += [[*command, "--seed", "-1"], [*command, "--seed", str(2**32 + rng.randrange(2**40))]]
    calls += [["train", "CartPole-v0", "--ticks", "1000000000"],
              ["train", "CartPole-v0", "--ticks", str(MAX_TICKS + 1 + rng.randrange(10**9))],
              ["train", "CartPole-v0", "--net-arch", "100000000"],
              ["train", "CartPole-v0", "--net-arch", f"64,{MAX_POPULATION_NEURONS + 1 + rng.randrange(10**6)}"],
              ["train", "CartPole-v0", "--net-arch", "5000,5000"],
              ["train", "CartPole-v0", "--net-arch", "4000,4000", "--ticks", str(MAX_TICKS)],
              ["train", "CartPole-v0", "--ticks", "0"], ["train", "CartPole-v0", "--net-arch", "0"]]
    return calls


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    return code, capsys.readouterr().err


def test_bad_invocations_end_in_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = _invocations(tmp_path)
    assert len(calls) >= 40
    for argv in calls:
        code, err = _run(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage:")
                 and not line.startswith(" ")]
        assert code == 2, (argv, code, err)
        assert "Traceback" not in err, argv
        assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    assert not (tmp_path / "afile").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device", "x.nir"),
                                   PermissionError(errno.EACCES, "Permission denied", "x.nir"), MemoryError()])
def test_write_failures_end_in_one_line_and_exit_1(error: BaseException, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("spiking_dqn.cli.export.write_nir", fail)
    code, err = _run(["export", PROGRAM, "--nir", str(tmp_path / "x.nir")], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "--debug" in err


def test_full_disk_in_deploy_ends_in_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npz"))

    monkeypatch.setattr("spiking_dqn.hardware.program.ChipProgram.save", fail)
    code, err = _run(["deploy", MODEL, "--final-episodes", "0", "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: no space left on the device"), err


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from spiking_dqn.cli import CLIError

    with pytest.raises(CLIError):
        main(["--debug", "train", "CartPole-v0", "--seed", "-1"])
    monkeypatch.setenv("SPIKING_DQN_DEBUG", "1")
    with pytest.raises(CLIError):
        main(["train", "CartPole-v0", "--seed", "-1"])
    monkeypatch.setenv("SPIKING_DQN_DEBUG", "0")
    assert main(["train", "CartPole-v0", "--seed", "-1"]) == 2
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert "--debug" in shown and "SPIKING_DQN_DEBUG=1" in shown
