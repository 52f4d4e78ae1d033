"""Shared fixtures. Tests run on the CPU with one torch thread (small tensors are fastest so)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch as th

th.set_num_threads(1)

CARTPOLE_BOUND = [2.4, 1.5, 0.2095, 2.0]


@pytest.fixture
def small_net():
    """A small random spiking Q-network whose hidden neurons do spike (a new one per test)."""
    from spiking_dqn import SpikingQNetwork

    th.manual_seed(0)
    return SpikingQNetwork(CARTPOLE_BOUND, 2, net_arch=[16, 8], ticks=10, threshold=0.5)


@pytest.fixture(scope="session")
def trained_tiny_model():
    """A tiny spiking DQN trained for 400 CartPole-v1 steps, with its replay buffer.

    Shared by the whole session: a test that trains, fine-tunes or snaps it must work on
    ``copy.deepcopy(trained_tiny_model)`` (``test_qat.py``'s ``tiny_model`` fixture does).
    """
    from stable_baselines3 import DQN

    from envs import make_vec
    from spiking_dqn import SpikingDQNPolicy

    th.manual_seed(0)
    model = DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), learning_starts=100, train_freq=16,
                gradient_steps=4, batch_size=32, buffer_size=5000, seed=0,
                policy_kwargs={"net_arch": [32, 16], "ticks": 8})
    model.learn(400)
    return model


# --------------------------------------------------------------------------- PostgreSQL
# A throw-away PostgreSQL server on loopback for the shared-study tests, started once per
# session from the Debian packages that scripts/install_postgres.sh installs (`make test`
# runs it). The server runs as the `postgres` user when the tests run as root (initdb and
# postgres refuse to run as root).


@pytest.fixture(scope="module")
def cartpole_shipped():
    """The shipped CartPole-v0 agent (``model.zip``): fine-tuned and on its grid, its int8 program plays as it does."""
    from stable_baselines3 import DQN

    from agents.common import trained_model_path

    return DQN.load(trained_model_path("CartPole-v0"), device="cpu")


@pytest.fixture(scope="module")
def cartpole_as_trained():
    """The shipped CartPole-v0 agent as trained (``model_trained.zip``): not fit yet, on no grid; its plain int8
    program plays far worse than it. Tests that change it take a ``copy.deepcopy``."""
    from stable_baselines3 import DQN

    from agents.common import trained_model_path
    from spiking_dqn.recipes.recipe import TRAINED_NAME

    return DQN.load(trained_model_path("CartPole-v0").with_name(TRAINED_NAME), device="cpu")


def _postgres_bin_dir() -> str | None:
    import glob
    import shutil

    def version(path: str) -> tuple:
        part = path.split("/")[-2]
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(os.path.join(bindir, "initdb"), os.X_OK) and os.access(os.path.join(bindir, "pg_ctl"), os.X_OK):
            return bindir
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return os.path.dirname(os.path.realpath(pg_ctl))
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a fresh database on a PostgreSQL server started on 127.0.0.1 for this session."""
    import pwd
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    bindir = _postgres_bin_dir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: "
            "run scripts/install_postgres.sh (make test does) or apt-get install postgresql"
        )
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary, part of the dev extra)")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        runuser = shutil.which("runuser")
        run_as = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]

    def run_as_owner(args: list[str]) -> subprocess.CompletedProcess:
        if run_as and run_as[0] == "su":
            import shlex

            return subprocess.run([*run_as, shlex.join(args)], capture_output=True, text=True, timeout=120)
        return subprocess.run([*run_as, *args], capture_output=True, text=True, timeout=120)

    base = tempfile.mkdtemp(prefix="spiking-dqn-pg-")
    os.chmod(base, 0o755)
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = os.path.join(base, "data")
    log = os.path.join(base, "server.log")
    port = _free_port()
    started = False
    try:
        initdb = os.path.join(bindir, "initdb")
        out = run_as_owner([initdb, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        if out.returncode != 0:
            pytest.fail(f"initdb failed: {out.stdout}\n{out.stderr}")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        out = run_as_owner([os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"])
        if out.returncode != 0:
            server_log = Path(log).read_text() if os.path.exists(log) else ""
            pytest.fail(f"PostgreSQL did not start: {out.stdout}\n{out.stderr}\n{server_log}")
        started = True
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE spiking_dqn_test")
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/spiking_dqn_test"
    finally:
        if started:
            run_as_owner([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)
