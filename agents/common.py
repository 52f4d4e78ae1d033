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
#: The agent as trained (best periodic evaluation), before quantization-aware fine-tuning.
TRAINED_NAME = "model_trained.zip"
#: Seeds of the final evaluation and of the QAT reward checks (apart from the training seeds).
EVAL_SEED = 12345
QAT_CHECK_SEED = 50_000
QAT_CHECK_EPISODES = 20
#: QAT steps between those checks (the fine-tuned weights kept are the best checked ones).
QAT_CHECK_FREQ = 1000
#: What ``eval.json`` keeps from training when ``--qat-only`` rewrites it.
TRAINING_KEYS = ("timesteps", "seed", "train_wall_time_s", "select_episodes", "eval_freq", "torch_threads", "machine")


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
    parser.add_argument(
        "--qat-steps",
        type=int,
        default=10_000,
        help="quantization-aware fine-tuning steps after training (0: none); model.zip is then the float twin of "
        "the int8 chip program",
    )
    parser.add_argument(
        "--qat-only",
        action="store_true",
        help="skip training: fine-tune the agent as trained (model_trained.zip in --out) and rewrite the card",
    )
    parser.add_argument("--net-arch", type=str, default=None, help="override the hidden layer sizes, e.g. 128,128")
    parser.add_argument("--ticks", type=int, default=None, help="override the ticks per inference")
    parser.add_argument(
        "--obs-bound", type=str, default=None, help="override the encoder bounds, one per observation dimension, e.g. 1,1,1,1,6,12"
    )
    args = parser.parse_args(argv)
    if args.timesteps < 1:
        parser.error("--timesteps must be positive")
    if args.qat_steps < 0:
        parser.error("--qat-steps must be >= 0")
    if args.qat_only and not (args.out / TRAINED_NAME).exists():
        parser.error(f"--qat-only needs the agent as trained: {args.out / TRAINED_NAME} does not exist")
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
    """Train with ``model.learn()``, keep the best evaluated model, fine-tune it for the chip, write a model card.

    1. Training (skipped with ``--qat-only``): SB3 ``DQN`` with ``SpikingDQNPolicy``; the
       best of the periodic evaluations is kept as ``model_trained.zip``.
    2. Quantization-aware fine-tuning (``--qat-steps``, 0 to skip):
       :func:`~spiking_dqn.qat.quantization_aware_finetune` on the int8 grid of
       ``lam="auto"``, keeping the weights that did best on the emulator, then
       :func:`~spiking_dqn.qat.snap_model_to_grid`. ``model.zip`` is then the float twin of the
       chip program that ``HardwarePolicy.from_model`` builds from it: the shipped float
       agent and the chip take the same greedy actions.
    3. Evaluation of ``model.zip`` (and of the agent as trained) over
       ``--eval-episodes`` deterministic episodes; ``eval.json`` and ``README.md``.

    :param env_id: Gymnasium id
    :param hyperparams: ``DQN`` keyword arguments, ``policy_kwargs`` included
    :param args: the parsed recipe options
    :param command: the command line to print in the model card
    :return: the evaluation summary written to ``eval.json``
    """
    from spiking_dqn.qat import quantization_aware_finetune, snap_model_to_grid

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    hyperparams = with_overrides(hyperparams, args)
    trained_path = out / TRAINED_NAME
    if args.qat_only:
        previous = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else {}
        training = {key: previous.get(key) for key in TRAINING_KEYS}
        training["command"] = previous.get("command") or "(training command not recorded)"
    else:
        training = train(env_id, hyperparams, args, trained_path)
        training["command"] = command

    model = DQN.load(trained_path, device="cpu")
    trained_rewards = evaluate(model, env_id, args.eval_episodes)
    qat: dict[str, Any] | None = None
    if args.qat_steps > 0:
        report = quantization_aware_finetune(
            model, "auto", args.qat_steps, env_id=env_id, check_episodes=QAT_CHECK_EPISODES,
            check_seed=QAT_CHECK_SEED, check_freq=QAT_CHECK_FREQ, seed=args.seed,
        )
        snap_model_to_grid(model, report.lambdas)  # the trained network is the fake-quantized one
        qat = report.to_dict()
        if args.qat_only:
            qat["command"] = command
    model.save(out / "model.zip")
    rewards = evaluate(model, env_id, args.eval_episodes) if qat is not None else trained_rewards

    summary = {
        "env_id": env_id,
        **{key: training[key] for key in TRAINING_KEYS},
        "eval_episodes": args.eval_episodes,
        "eval_seed": EVAL_SEED,
        "mean_reward": float(np.mean(rewards)),
        "std_reward": float(np.std(rewards)),
        "min_reward": float(np.min(rewards)),
        "trained_mean_reward": float(np.mean(trained_rewards)),
        "trained_std_reward": float(np.std(trained_rewards)),
        "qat": qat,
        "command": training["command"],
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_learning_curve(out / "evaluations.npz", out / "reward_curve.png", env_id)
    write_model_card(out / "README.md", env_id, hyperparams, summary)
    print(
        f"{env_id}: mean reward {summary['mean_reward']:.1f} +- {summary['std_reward']:.1f} over "
        f"{args.eval_episodes} deterministic episodes (min {summary['min_reward']:.0f}; as trained, before QAT: "
        f"{summary['trained_mean_reward']:.1f}); saved {out / 'model.zip'}"
    )
    return summary


def train(env_id: str, hyperparams: dict[str, Any], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Train with ``model.learn()`` and save the best periodically evaluated model to ``path``.

    :return: the training record (timesteps, seed, wall time, selection, machine)
    """
    out: Path = args.out
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
    best_path = best_dir / "best_model.zip"
    if best_path.exists():
        best_path.replace(path)
    else:
        model.save(path)
    if best_dir.exists() and not any(best_dir.iterdir()):
        best_dir.rmdir()
    print(f"{env_id}: trained {args.timesteps} steps in {wall:.0f} s; saved {path}", flush=True)
    return {
        "timesteps": args.timesteps,
        "seed": args.seed,
        "train_wall_time_s": round(wall, 1),
        "select_episodes": args.select_episodes,
        "eval_freq": args.eval_freq,
        "torch_threads": th.get_num_threads(),
        "machine": f"{platform.machine()}, {th.get_num_threads()} torch thread(s)",
    }


def evaluate(model: DQN, env_id: str, n_episodes: int) -> np.ndarray:
    """Rewards of ``n_episodes`` deterministic episodes (SB3 ``evaluate_policy``, env seed ``EVAL_SEED``)."""
    rewards, _ = evaluate_policy(
        model, make_env(env_id, seed=EVAL_SEED), n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True
    )
    return np.asarray(rewards, dtype=float)


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


def write_model_card(path: Path, env_id: str, hyperparams: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write a short model card: commands, hyperparameters, training, QAT, evaluation."""
    lines = [
        f"# Spiking DQN agent for {env_id}",
        "",
        "Trained with the unchanged Stable-Baselines3 `DQN` and `spiking_dqn.SpikingDQNPolicy`.",
        "",
        "Command:",
        "",
        "```bash",
        str(summary["command"]),
        *([summary["qat"]["command"]] if summary["qat"] and summary["qat"].get("command") else []),
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
        f"(SB3 `EvalCallback`, on other env seeds than the final evaluation): `{TRAINED_NAME}`",
        f"- training wall time: {summary['train_wall_time_s']} s on a 2-core CPU machine ({summary['machine']})",
    ]
    qat = summary["qat"]
    if qat:
        lambdas = ", ".join(f"{lam:.1f}" for lam in qat["lambdas"])
        lines += [
            f"- quantization-aware fine-tuning: {qat['steps']} online steps on the int8 grid of lambdas ({lambdas}), "
            f"weights kept by emulator reward on {QAT_CHECK_EPISODES} check episodes every {QAT_CHECK_FREQ} steps "
            f"({qat['reward_before']:.1f} before, {qat['reward_after']:.1f} after; "
            f"{'fine-tuned weights kept' if qat['kept'] else 'no improvement: weights as trained kept'}), then snapped "
            f"to the grid ({qat['wall_time_s']:.0f} s): `model.zip` is the float twin of the chip program "
            "(`HardwarePolicy.from_model` quantizes it with these lambdas)",
        ]
    lines += [
        f"- evaluation (float policy `model.zip`, {summary['eval_episodes']} deterministic episodes, env seed "
        f"{summary['eval_seed']}): mean {summary['mean_reward']:.2f} +- {summary['std_reward']:.2f}, "
        f"min {summary['min_reward']:.0f}",
    ]
    if qat:
        lines.append(
            f"- the agent as trained (`{TRAINED_NAME}`, before QAT), same episodes: "
            f"mean {summary['trained_mean_reward']:.2f} +- {summary['trained_std_reward']:.2f}"
        )
    if (path.parent / "reward_curve.png").exists():
        lines += ["", "![periodic evaluations](reward_curve.png)"]
    lines.append("")
    path.write_text("\n".join(lines))


def replace_card_section(card: Path, name: str, body: str) -> None:
    """Write ``body`` into the model card between ``<!-- name:begin -->`` and ``<!-- name:end -->``.

    An existing section of that name is replaced; otherwise the section is appended. The
    recipe rewrites the whole card, so sections measured on an earlier agent go with it.

    :param card: the model card (``README.md``); created if missing
    :param name: section name
    :param body: the section's Markdown, without the markers
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}\n"
    text = card.read_text() if card.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    card.write_text(text)


def command_line(module: str) -> str:
    """The command that reproduces this run, for the model card."""
    return " ".join(["python -m", module, *sys.argv[1:]])
