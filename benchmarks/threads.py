"""Speed with no thread setting against ``OMP_NUM_THREADS=1``, side by side.

A user who installs with pip never meets the Makefile's ``OMP_NUM_THREADS=1``; the package
chooses torch's thread count itself (:mod:`spiking_dqn.threads`). This script runs, in
fresh processes and alternating rounds so that machine load affects both alike:

* ``quickstart``: the README's Quick start training (``DQN(SpikingDQNPolicy, ...)`` and
  ``model.learn``) at ``--quickstart-steps`` steps;
* ``train``: ``spiking-dqn train CartPole-v1 --timesteps --train-steps``;

each once with every thread variable removed from the environment and once with
``OMP_NUM_THREADS=1``, and reports the median wall time of each and the ratio
(speed unset / speed with the variable; the target is at least 0.9).

    python benchmarks/threads.py --rounds 3

writes ``benchmarks/results/threads.json`` and ``threads.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from spiking_dqn.recipes.versions import machine_line

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

QUICKSTART = """
from stable_baselines3 import DQN
from spiking_dqn import SpikingDQNPolicy
model = DQN(SpikingDQNPolicy, "CartPole-v0", policy_kwargs=dict(net_arch=[64, 64], ticks=10), seed=0)
model.learn({steps})
"""


def commands(args: argparse.Namespace, out: Path) -> dict[str, list[str]]:
    """The timed commands by name."""
    cli = str(Path(sys.executable).with_name("spiking-dqn"))
    return {
        "quickstart": [sys.executable, "-c", QUICKSTART.format(steps=args.quickstart_steps)],
        "train": [cli, "train", "CartPole-v1", "--timesteps", str(args.train_steps), "--out", str(out / "train")],
    }


def timed(command: list[str], with_variable: bool) -> float:
    """Wall seconds of one run of ``command`` with the thread variables removed, or with ``OMP_NUM_THREADS=1``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if with_variable:
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def table(results: dict[str, dict[str, float]]) -> str:
    """The results as a markdown table."""
    lines = ["| command | unset (s) | OMP_NUM_THREADS=1 (s) | speed unset / with the variable |", "|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name} | {row['unset_s']:.1f} | {row['omp1_s']:.1f} | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per command and setting")
    parser.add_argument("--quickstart-steps", type=int, default=5000, help="training steps of the Quick start")
    parser.add_argument("--train-steps", type=int, default=5000, help="--timesteps of spiking-dqn train")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for threads.json and threads.md")
    args = parser.parse_args()
    times: dict[str, dict[bool, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        todo = [(name, cmd, flag) for _ in range(args.rounds) for name, cmd in commands(args, Path(tmp)).items()
                for flag in (False, True)]
        for name, command, with_variable in tqdm(todo, desc="runs"):
            times.setdefault(name, {False: [], True: []})[with_variable].append(timed(command, with_variable))
    results = {}
    for name, by_flag in times.items():
        unset, omp1 = statistics.median(by_flag[False]), statistics.median(by_flag[True])
        results[name] = {"unset_s": unset, "omp1_s": omp1, "ratio": omp1 / unset, "runs": {
            "unset": by_flag[False], "omp1": by_flag[True]}}
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": "python benchmarks/threads.py " + " ".join(sys.argv[1:]), "rounds": args.rounds,
              "quickstart_steps": args.quickstart_steps, "train_steps": args.train_steps,
              "machine": machine_line(threads="torch threads as each run sets them"), "results": results}
    (args.out / "threads.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "threads.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
