"""Training throughput: SB3's own MlpPolicy DQN vs SpikingDQNPolicy on CartPole-v0, in one run.

Both use the hyperparameters of ``agents/cartpole.py`` (the shipped CartPole recipe) and
the same ``net_arch``; the spiking policy runs 10 ticks (the reference configuration; the
shipped agent uses 16, pass ``--ticks 16`` for that). Prints env-steps per second of
each and their ratio, and writes them to ``benchmarks/results/train_throughput.json``.

    python benchmarks/train_throughput.py --steps 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch as th
from stable_baselines3 import DQN

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.cartpole import HYPERPARAMS  # noqa: E402
from spiking_dqn import SpikingDQNPolicy  # noqa: E402

SPIKING_ONLY = {"ticks", "beta", "threshold", "surrogate", "reset", "synaptic_delay", "encoding", "obs_bound"}


def steps_per_second(policy, policy_kwargs: dict, steps: int, seed: int) -> tuple[float, float]:
    """Train for ``steps`` env steps (after a short warm-up) and return (steps/s, seconds)."""
    hyper = {k: v for k, v in HYPERPARAMS.items() if k != "policy_kwargs"}
    model = DQN(policy, "CartPole-v0", policy_kwargs=policy_kwargs, seed=seed, device="cpu", **hyper)
    model.learn(hyper["learning_starts"] + 512)  # warm-up: fill the buffer past learning_starts
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    return steps / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="timed env steps per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both)")
    parser.add_argument("--ticks", type=int, default=10, help="ticks of the spiking policy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    spiking_kwargs = dict(HYPERPARAMS["policy_kwargs"], ticks=args.ticks)
    mlp_kwargs = {k: v for k, v in spiking_kwargs.items() if k not in SPIKING_ONLY}
    results = {}
    for name, policy, kwargs in [
        ("MlpPolicy", "MlpPolicy", mlp_kwargs),
        ("SpikingDQNPolicy", SpikingDQNPolicy, spiking_kwargs),
    ]:
        print(f"training {name} for {args.steps} steps ...", flush=True)
        sps, wall = steps_per_second(policy, kwargs, args.steps, args.seed)
        results[name] = {"steps_per_s": round(sps, 1), "wall_s": round(wall, 2), "policy_kwargs": kwargs}
        print(f"  {name}: {sps:8.1f} env-steps/s ({wall:.1f} s)", flush=True)
    ratio = results["SpikingDQNPolicy"]["steps_per_s"] / results["MlpPolicy"]["steps_per_s"]
    report = {
        "env_id": "CartPole-v0",
        "steps": args.steps,
        "torch_threads": args.threads,
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "hyperparameters": {k: v for k, v in HYPERPARAMS.items() if k != "policy_kwargs"},
        "results": results,
        "ratio_spiking_over_mlp": round(ratio, 3),
        "target_ratio": 0.5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ratio spiking / mlp: {ratio:.2f} (target >= 0.5); written to {args.out}")


if __name__ == "__main__":
    main()
