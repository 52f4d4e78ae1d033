"""A threshold-search worker run in a subprocess by tests/test_search*.py.

    python tests/_search_worker.py '{"storage": ..., "study_name": ..., ...}'

Builds the same small chip program in every process (fixed seed), wraps the emulator to
log the programs it evaluates, to go slow, or to die (os._exit) at a given backend call,
and prints the search result as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch as th  # noqa: E402

th.set_num_threads(1)

from spiking_dqn import SpikingQNetwork  # noqa: E402
from spiking_dqn.hardware import EmulatorBackend  # noqa: E402
from spiking_dqn.quantization import quantize_network  # noqa: E402
from spiking_dqn.search import threshold_search  # noqa: E402
from spiking_dqn.search.grid import STUDY_KEY_DIGITS  # noqa: E402

CARTPOLE_BOUND = [2.4, 1.5, 0.2095, 2.0]


def small_program(seed: int = 0):
    """The chip program of a small random network (the same in every process)."""
    th.manual_seed(seed)
    net = SpikingQNetwork(CARTPOLE_BOUND, 2, net_arch=[16, 8], ticks=8, threshold=0.5)
    program, _ = quantize_network(net, "auto")
    return program


def study_names(study_name: str, seed: int = 0) -> list[str]:
    """The two studies a search of :func:`small_program` names ``study_name`` keeps."""
    prefix = f"{study_name}-{small_program(seed).digest()[:STUDY_KEY_DIGITS]}"
    return [f"{prefix}-stage1", f"{prefix}-stage2"]


class ScriptedBackend:
    """The emulator, plus: a log of evaluated thresholds, a delay per call, a death at call N."""

    name = "emulator"

    def __init__(self, log: str | None = None, sleep: float = 0.0, exit_after: int | None = None) -> None:
        self.inner = EmulatorBackend(warn_saturation=False)
        self.log = log
        self.sleep = sleep
        self.exit_after = exit_after
        self.calls = 0
        self.last_program = None

    def run(self, program, obs):
        self.calls += 1
        if self.exit_after is not None and self.calls >= self.exit_after:
            os._exit(17)  # killed in the middle of an evaluation
        if program is not self.last_program:
            self.last_program = program
            if self.log:
                thresholds = [round(float(np.mean(t)), 5) for t in program.thresholds[:-1]]
                with open(self.log, "a") as f:
                    f.write(json.dumps({"pid": os.getpid(), "thresholds": thresholds}) + "\n")
        if self.sleep:
            time.sleep(self.sleep)
        return self.inner.run(program, obs)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    backend = ScriptedBackend(cfg.get("log"), cfg.get("sleep", 0.0), cfg.get("exit_after"))
    if cfg.get("ready"):
        from spiking_dqn.search import open_storage

        open_storage(cfg["storage"])  # create the schema now, not in the race below
        open(cfg["ready"], "w").close()
        deadline = time.time() + 60
        while not os.path.exists(cfg["go"]) and time.time() < deadline:
            time.sleep(0.02)
    result = threshold_search(
        small_program(cfg.get("seed", 0)),
        cfg.get("env_id", "CartPole-v1"),
        backend=backend,
        stage1_grid=cfg["stage1"],
        stage2_factors=cfg["stage2"],
        n_episodes=cfg.get("episodes", 2),
        storage=cfg["storage"],
        study_name=cfg["study_name"],
        heartbeat_interval=cfg.get("heartbeat_interval", 1),
        progress_bar=False,
    )
    print(json.dumps({"best": result.best.multipliers, "reward": result.best.mean_reward,
                      "evaluated_here": result.evaluated_here, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
