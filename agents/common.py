"""Shared ``model.learn()`` recipe: train a spiking DQN, keep the best model, evaluate it, write a model card."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import CallbackList, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy

from envs import make_env, make_vec
from spiking_dqn import SpikeActivityLogger, SpikingDQNPolicy

TRAINED_DIR = Path(__file__).resolve().parent / "trained"


def trained_model_path(env_id: str) -> Path:
    """Where the shipped trained agent of ``env_id`` lives."""
    return TRAINED_DIR / env_id / "model.zip"


def parse_args(env_id: str, default_timesteps: int, argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options shared by the recipes."""
    parser = argparse.ArgumentParser(description=f"Train a spiking DQN on {env_id} with model.learn().")
    parser.add_argument("--timesteps", type=int, default=default_timesteps, help="environment steps to train for")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", type=Path, default=TRAINED_DIR / env_id, help="output folder (model.zip, README.md)")
    parser.add_argument("--tensorboard-log", type=str, default=None, help="TensorBoard log folder")
    parser.add_argument("--eval-freq", type=int, default=2500, help="steps between evaluations (best model kept)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="episodes of the final evaluation")
    parser.add_argument(
        "--select-episodes", type=int, default=50, help="episodes of each periodic evaluation that picks the best model"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--net-arch", type=str, default=None, help="override the hidden layer sizes, e.g. 128,128")
    parser.add_argument("--ticks", type=int, default=None, help="override the ticks per inference")
    parser.add_argument(
        "--obs-bound", type=str, default=None, help="override the encoder bounds, one per observation dimension, e.g. 1,1,1,1,6,12"
    )
    args = parser.parse_args(argv)
    if args.timesteps < 1:
        parser.error("--timesteps must be positive")
    return args


def with_overrides(hyperparams: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's hyperparameters with the ``--net-arch`` / ``--ticks`` / ``--obs-bound`` overrides applied."""
    policy_kwargs = dict(hyperparams["policy_kwargs"])
    if getattr(args, "net_arch", None):
        policy_kwargs["net_arch"] = [int(n) for n in args.net_arch.split(",")]
    if getattr(args, "ticks", None):
        policy_kwargs["ticks"] = args.ticks
    if getattr(args, "obs_bound", None):
        policy_kwargs["obs_bound"] = [float(b) for b in args.obs_bound.split(",")]
    return {**hyperparams, "policy_kwargs": policy_kwargs}


def train_and_card(env_id: str, hyperparams: dict[str, Any], args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Train with ``model.learn()``, keep the best evaluated model, evaluate it and write a model card.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included
    :param args: the parsed recipe options
    :param command: the command line to print in the model card
    :return: the evaluation summary written to ``eval.json``
    """
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    hyperparams = with_overrides(hyperparams, args)
    env = make_vec(env_id, n_envs=1, seed=args.seed)
    model = DQN(SpikingDQNPolicy, env, seed=args.seed, tensorboard_log=args.tensorboard_log, verbose=0, **hyperparams)
    eval_env = make_vec(env_id, n_envs=1, seed=args.seed + 1000)
    best_dir = out / "best"
    callbacks = CallbackList(
        [
            SpikeActivityLogger(log_freq=1000),
            EvalCallback(
                eval_env,
                n_eval_episodes=args.select_episodes,
                eval_freq=args.eval_freq,
                best_model_save_path=str(best_dir),
                log_path=str(out),
                deterministic=True,
                verbose=0,
            ),
        ]
    )
    start = time.perf_counter()
    model.learn(args.timesteps, callback=callbacks, progress_bar=not args.no_progress, tb_log_name=env_id)
    wall = time.perf_counter() - start
    final_path = best_dir / "best_model.zip"
    if final_path.exists():
        model = DQN.load(final_path, device="cpu")
    model.save(out / "model.zip")
    final_path.unlink(missing_ok=True)
    if best_dir.exists() and not any(best_dir.iterdir()):
        best_dir.rmdir()

    rewards, lengths = evaluate_policy(
        model, make_env(env_id, seed=12345), n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True
    )
    summary = {
        "env_id": env_id,
        "timesteps": args.timesteps,
        "seed": args.seed,
        "train_wall_time_s": round(wall, 1),
        "eval_episodes": args.eval_episodes,
        "select_episodes": args.select_episodes,
        "eval_freq": args.eval_freq,
        "mean_reward": float(np.mean(rewards)),
        "std_reward": float(np.std(rewards)),
        "min_reward": float(np.min(rewards)),
        "torch_threads": th.get_num_threads(),
        "machine": f"{platform.machine()}, {th.get_num_threads()} torch thread(s)",
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_learning_curve(out / "evaluations.npz", out / "reward_curve.png", env_id)
    write_model_card(out / "README.md", env_id, hyperparams, summary, command)
    print(
        f"{env_id}: mean reward {summary['mean_reward']:.1f} +- {summary['std_reward']:.1f} over "
        f"{args.eval_episodes} deterministic episodes (min {summary['min_reward']:.0f}); "
        f"trained {args.timesteps} steps in {wall:.0f} s; saved {out / 'model.zip'}"
    )
    return summary


def plot_learning_curve(evaluations: Path, path: Path, env_id: str) -> None:
    """Plot the periodic evaluations of ``EvalCallback`` (mean +- std reward over timesteps)."""
    if not evaluations.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(evaluations)
    steps, results = data["timesteps"], data["results"]
    mean, std = results.mean(axis=1), results.std(axis=1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, mean, marker="o", ms=3, label="mean reward")
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25, label="+- std")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"reward ({results.shape[1]} episodes)")
    ax.set_title(f"spiking DQN on {env_id}: periodic evaluations")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_model_card(path: Path, env_id: str, hyperparams: dict[str, Any], summary: dict[str, Any], command: str) -> None:
    """Write a short model card: command, hyperparameters, timesteps, wall time, evaluation."""
    lines = [
        f"# Spiking DQN agent for {env_id}",
        "",
        "Trained with the unchanged Stable-Baselines3 `DQN` and `spiking_dqn.SpikingDQNPolicy`.",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Hyperparameters:",
        "",
        "```json",
        json.dumps(hyperparams, indent=2, default=str),
        "```",
        "",
        f"- timesteps: {summary['timesteps']} (seed {summary['seed']}); the model kept is the best of the "
        f"periodic {summary['select_episodes']}-episode evaluations every {summary['eval_freq']} steps "
        "(SB3 `EvalCallback`, on other env seeds than the final evaluation)",
        f"- training wall time: {summary['train_wall_time_s']} s on a 2-core CPU machine ({summary['machine']})",
        f"- evaluation (float policy, {summary['eval_episodes']} deterministic episodes): "
        f"mean {summary['mean_reward']:.2f} +- {summary['std_reward']:.2f}, min {summary['min_reward']:.0f}",
        "",
        "![periodic evaluations](reward_curve.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def command_line(module: str) -> str:
    """The command that reproduces this run, for the model card."""
    return " ".join(["python -m", module, *sys.argv[1:]])
