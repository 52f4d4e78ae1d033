"""Training throughput: SB3's own MlpPolicy DQN vs SpikingDQNPolicy on CartPole-v0, in one run.

Both use the hyperparameters of ``agents/cartpole.py`` (the shipped CartPole recipe) and
the same ``net_arch``; the spiking policy runs 10 ticks (the reference configuration; the
shipped agent uses 16, pass ``--ticks 16`` for that). Prints env-steps per second of
each and their ratio, and writes them to ``benchmarks/results/train_throughput.json``.

The two policies train in alternating rounds (``--rounds``, each ``--steps`` env steps,
continuing the same two models), and the figures are the medians over the rounds, so
that a change in machine load during the run affects both alike.

    python benchmarks/train_throughput.py --steps 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


def make_model(policy, policy_kwargs: dict, seed: int) -> DQN:
    """A DQN with the recipe's hyperparameters, warmed up past ``learning_starts``."""
    hyper = {k: v for k, v in HYPERPARAMS.items() if k != "policy_kwargs"}
    model = DQN(policy, "CartPole-v0", policy_kwargs=policy_kwargs, seed=seed, device="cpu", **hyper)
    model.learn(hyper["learning_starts"] + 512)  # warm-up: fill the buffer, compile kernels
    return model


def timed_round(model: DQN, steps: int) -> float:
    """Seconds to train ``model`` for ``steps`` more env steps."""
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5_000, help="timed env steps per policy and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both)")
    parser.add_argument("--ticks", type=int, default=10, help="ticks of the spiking policy")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    spiking_kwargs = dict(HYPERPARAMS["policy_kwargs"], ticks=args.ticks)
    mlp_kwargs = {k: v for k, v in spiking_kwargs.items() if k not in SPIKING_ONLY}
    policies = {
        "MlpPolicy": ("MlpPolicy", mlp_kwargs),
        "SpikingDQNPolicy": (SpikingDQNPolicy, spiking_kwargs),
    }
    models = {name: make_model(policy, kwargs, args.seed) for name, (policy, kwargs) in policies.items()}
    walls: dict[str, list[float]] = {name: [] for name in policies}
    for round_ in range(args.rounds):
        for name, model in models.items():
            walls[name].append(timed_round(model, args.steps))
        print(
            f"round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{name} {args.steps / walls[name][-1]:.0f} steps/s" for name in models),
            flush=True,
        )
    results = {}
    for name, (_, kwargs) in policies.items():
        median = statistics.median(walls[name])
        results[name] = {
            "steps_per_s": round(args.steps / median, 1),
            "steps_per_s_rounds": [round(args.steps / w, 1) for w in walls[name]],
            "wall_s_total": round(sum(walls[name]), 2),
            "policy_kwargs": kwargs,
        }
        print(f"  {name}: {args.steps / median:8.1f} env-steps/s (median of {args.rounds} rounds)", flush=True)
    ratio = results["SpikingDQNPolicy"]["steps_per_s"] / results["MlpPolicy"]["steps_per_s"]
    # Each round's two runs are back to back, so their ratio sees nearly the same load.
    paired = statistics.median(m / s for m, s in zip(walls["MlpPolicy"], walls["SpikingDQNPolicy"]))
    report = {
        "env_id": "CartPole-v0",
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "timing": "alternating rounds, medians; all figures measured",
        "torch_threads": args.threads,
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "hyperparameters": {k: v for k, v in HYPERPARAMS.items() if k != "policy_kwargs"},
        "results": results,
        "ratio_spiking_over_mlp": round(ratio, 3),
        "ratio_spiking_over_mlp_paired_rounds_median": round(paired, 3),
        "target_ratio": 0.5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"ratio spiking / mlp: {ratio:.2f} from the medians, {paired:.2f} median of the per-round ratios "
        f"(target >= 0.5); written to {args.out}"
    )


if __name__ == "__main__":
    main()
