"""The ``spiking-dqn`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = {
    "CartPole-v0": "agents.cartpole",
    "CartPole-v1": "agents.cartpole",
    "Acrobot-v1": "agents.acrobot",
}


def _cmd_train(args: argparse.Namespace) -> int:
    import importlib

    from agents.common import parse_args, train_and_card

    if args.env not in RECIPES:
        print(f"error: no recipe for {args.env!r}; available: {', '.join(sorted(RECIPES))}", file=sys.stderr)
        return 2
    recipe = importlib.import_module(RECIPES[args.env])
    argv = ["--seed", str(args.seed), "--out", str(args.out or Path("runs") / args.env)]
    argv += ["--timesteps", str(args.timesteps or recipe.TIMESTEPS), "--eval-episodes", str(args.eval_episodes)]
    argv += ["--qat-steps", str(args.qat_steps)]
    if args.tensorboard_log:
        argv += ["--tensorboard-log", args.tensorboard_log]
    command = " ".join(["spiking-dqn", *sys.argv[1:]])
    train_and_card(args.env, recipe.HYPERPARAMS, parse_args(args.env, recipe.TIMESTEPS, argv), command)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: train on CartPole-v0, evaluate, deploy to the emulator, compare."""
    import importlib

    from agents.common import parse_args, train_and_card
    from agents.deploy import deploy

    recipe = importlib.import_module(RECIPES[args.env])
    out: Path = args.out
    argv = ["--seed", str(args.seed), "--out", str(out), "--timesteps", str(args.timesteps or recipe.TIMESTEPS)]
    argv += ["--tensorboard-log", str(out / "tb"), "--eval-episodes", str(args.episodes)]
    argv += ["--qat-steps", str(args.qat_steps)]
    print(f"[1/2] training a spiking DQN on {args.env} (TensorBoard: tensorboard --logdir {out / 'tb'}), then "
          f"quantization-aware fine-tuning ({args.qat_steps} steps)", flush=True)
    summary = train_and_card(
        args.env, recipe.HYPERPARAMS, parse_args(args.env, recipe.TIMESTEPS, argv), " ".join(["spiking-dqn", *sys.argv[1:]])
    )
    print(f"[2/2] int8 deployment to the embedded SpiNNaker2 emulator, comparison over {args.episodes} episodes",
          flush=True)
    record = deploy(args.env, episodes=args.episodes, seed=args.seed, folder=out)
    figures = record["figures"]
    print()
    print(f"Result on {args.env} after {summary['timesteps']} training steps ({summary['train_wall_time_s']:.0f} s):")
    print(f"  float agent as trained, {args.episodes} deterministic episodes: mean reward "
          f"{summary['trained_mean_reward']:.1f}")
    print(f"  float agent after quantization-aware fine-tuning (model.zip): mean reward {summary['mean_reward']:.1f}")
    print(f"  on the emulated chip (int8): mean reward {figures['chip_reward']:.1f}, "
          f"action agreement with the float agent {figures['action_agreement']:.1%}")
    print(f"Files: {out / 'README.md'} (model card), {out / 'reward_curve.png'}, {out / 'chip_program.npz'}, "
          f"{out / 'deployment' / 'report.md'} (+ PNG plots)")
    return 0


def parse_lambda(text: str) -> str | float | list[float]:
    """``--lam`` value: ``"auto"``, one number (every projection), or comma-separated numbers (one each)."""
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid lambda {text!r}: use 'auto', a number (e.g. 3) or one number per projection (e.g. 3,3,3)"
        ) from None
    return values[0] if len(values) == 1 else values


def parse_scale(text: str) -> float | list[float]:
    """``--threshold-scale`` value: one positive number, or one per hidden layer, comma-separated."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid threshold scale {text!r}: use a number or e.g. 1.2,0.9") from None
    if not all(v > 0 and v != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"threshold scales must be positive and finite, got {text!r}")
    return values[0] if len(values) == 1 else values


def infer_env_id(model_path: Path) -> str | None:
    """The env id of a shipped agent, ``agents/trained/<env>/model.zip``; None for any other path.

    SB3 model files do not store the env id, so only the folder layout of shipped agents tells it.
    """
    parent = model_path.resolve().parent
    if parent.parent.name == "trained" and parent.parent.parent.name == "agents":
        return parent.name
    return None


class CLIError(Exception):
    """A user error: printed as ``error: ...`` with exit status 2."""


def load_spiking_model(path: Path, device: str = "cpu"):
    """Load an SB3 DQN whose policy is a ``SpikingDQNPolicy``.

    :raises CLIError: missing file, not an SB3 DQN file, or not a spiking policy
    """
    from stable_baselines3 import DQN

    from spiking_dqn.policies import SpikingDQNPolicy

    if not path.is_file():
        raise CLIError(f"no model file at {path}")
    try:
        model = DQN.load(path, device=device)
    except Exception as exc:  # SB3 raises many kinds for foreign or damaged files
        raise CLIError(
            f"could not load {path} as a Stable-Baselines3 DQN model ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model.policy, SpikingDQNPolicy):
        raise CLIError(
            f"{path} is a DQN model with a {type(model.policy).__name__}, not a spiking_dqn.SpikingDQNPolicy: only "
            "spiking Q-networks (DQN(SpikingDQNPolicy, env)) can be deployed to the chip or compared with it"
        )
    return model


def _backend_options(args: argparse.Namespace) -> dict:
    if args.backend == "spinnaker2":
        if not args.eth_ip:
            raise CLIError("--backend spinnaker2 needs the chip's address: --eth-ip IP")
        return {"eth_ip": args.eth_ip}
    if args.eth_ip:
        raise CLIError("--eth-ip is only used with --backend spinnaker2")
    return {}


def _cmd_compare(args: argparse.Namespace) -> int:
    import gymnasium as gym
    from rich.console import Console
    from rich.table import Table

    from spiking_dqn.evaluation import compare, resolve_device
    from spiking_dqn.hardware import ChipConnectionError, ChipProgramError

    env_id = args.env or infer_env_id(args.model)
    if env_id is None:
        raise CLIError(
            "--env is required: SB3 model files do not store the environment id (it is inferred only for "
            "shipped agents at agents/trained/<env>/model.zip)"
        )
    options = _backend_options(args)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    model = load_spiking_model(args.model, device=str(device))
    out = args.out or Path("runs") / "compare" / env_id
    try:
        report = compare(
            model,
            env_id,
            backend=args.backend,
            lam=args.lam,
            program=args.program,
            n_episodes=args.episodes,
            seed=args.seed,
            device=device,
            tick_s=args.tick_ms * 1e-3,
            progress=not args.no_progress,
            backend_options=options,
        )
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError, ChipConnectionError) as exc:
        raise CLIError(str(exc)) from None
    except gym.error.Error as exc:
        raise CLIError(f"cannot make environment {env_id!r}: {exc}") from None
    paths = report.write(out)

    console = Console()
    chip = "chip" if args.backend == "spinnaker2" else "chip (emulator)"
    table = Table(title=f"float vs {chip}: {env_id}, {args.episodes} episodes (seeds {args.seed}..)")
    table.add_column("figure")
    table.add_column(f"float ({report.float_device})")
    table.add_column(chip)
    for row in report.summary_rows():
        table.add_row(*row)
    console.print(table)
    console.print(
        f"lambdas {[round(x, 4) for x in report.program.lambdas]}; program: {report.program_source}", soft_wrap=True
    )
    console.print(f"report written to {out} ({', '.join(p.name for p in paths.values())})", soft_wrap=True)
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    import warnings

    from spiking_dqn.hardware_policy import HardwarePolicy

    model = load_spiking_model(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hardware = HardwarePolicy.from_model(model, lam=args.lam, seed=args.seed)
        except (ValueError, TypeError) as exc:
            raise CLIError(str(exc)) from None
    program = hardware.program
    if args.threshold_scale is not None:
        n_hidden = len(program.weights) - 1
        scales = args.threshold_scale if isinstance(args.threshold_scale, list) else [args.threshold_scale] * n_hidden
        if len(scales) != n_hidden:
            raise CLIError(f"--threshold-scale needs one value or {n_hidden} (one per hidden layer), got {len(scales)}")
        new = [t * s for t, s in zip(program.thresholds[:-1], scales)] + [program.thresholds[-1]]
        program = program.with_thresholds(new)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    program.save(args.out)
    print(f"quantization report ({args.model}, lam={args.lam!r}):")
    print(hardware.quantization_report)
    for w in caught:
        print(f"warning: {w.message}")
    print(program)
    print("hidden thresholds (chip units): " + ", ".join(f"{float(t.mean()):.4g}" for t in program.thresholds[:-1]))
    print(f"chip program written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spiking-dqn``."""
    parser = argparse.ArgumentParser(prog="spiking-dqn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a spiking DQN with the recipe of an environment")
    train.add_argument("env", help=f"environment id ({', '.join(sorted(RECIPES))})")
    train.add_argument("--timesteps", type=int, default=None, help="environment steps (default: the recipe's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=None, help="output folder (default runs/<env>)")
    train.add_argument("--tensorboard-log", default=None, help="TensorBoard log folder")
    train.add_argument("--eval-episodes", type=int, default=100, help="episodes of the final evaluation")
    train.add_argument(
        "--qat-steps", type=int, default=10_000, help="quantization-aware fine-tuning steps after training (0: none)"
    )
    train.set_defaults(func=_cmd_train)

    lam_help = "lambda: 'auto' (default), one number for every projection (e.g. 3), or one per projection (3,3,3)"
    demo = sub.add_parser("demo", help="the main job: train on CartPole-v0, deploy to the emulator, compare")
    demo.add_argument("--env", default="CartPole-v0", choices=sorted(RECIPES))
    demo.add_argument("--timesteps", type=int, default=None, help="training steps (default: the recipe's)")
    demo.add_argument("--episodes", type=int, default=20, help="evaluation episodes (float and chip)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--qat-steps", type=int, default=10_000, help="quantization-aware fine-tuning steps")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.set_defaults(func=_cmd_demo)

    cmp = sub.add_parser("compare", help="compare the float policy with the deployed (chip or emulator) policy")
    cmp.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
    cmp.add_argument("--env", default=None, help="environment id (inferred only for agents/trained/<env>/model.zip)")
    cmp.add_argument("--backend", choices=["emulator", "spinnaker2"], default="emulator")
    cmp.add_argument("--lam", type=parse_lambda, default="auto", help=lam_help)
    cmp.add_argument("--program", type=Path, default=None, help="deploy this chip program (.npz) instead of quantizing")
    cmp.add_argument("--episodes", type=int, default=100, help="episodes per policy (default 100)")
    cmp.add_argument("--seed", type=int, default=0, help="env seed of the first episode (episode i: seed + i)")
    cmp.add_argument("--out", type=Path, default=None, help="report folder (default runs/compare/<env>)")
    cmp.add_argument("--eth-ip", default=None, help="SpiNNaker2 chip address (with --backend spinnaker2)")
    cmp.add_argument("--device", default="auto", help="torch device of the float policy (default: CUDA if available)")
    cmp.add_argument("--tick-ms", type=float, default=1.0, help="chip tick duration in ms (default 1)")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp.set_defaults(func=_cmd_compare)

    dep = sub.add_parser("deploy", help="quantize a trained model into a chip program file")
    dep.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
    dep.add_argument("--lam", type=parse_lambda, default="auto", help=lam_help)
    dep.add_argument(
        "--out", type=Path, default=Path("chip_program.npz"), help="program file (default chip_program.npz)"
    )
    dep.add_argument(
        "--threshold-scale",
        type=parse_scale,
        default=None,
        help="multiply the hidden thresholds (chip units) by this, or by one value per hidden layer (e.g. 1.2,0.9)",
    )
    dep.add_argument("--seed", type=int, default=0, help="seed of the chip's Poisson encoder (if the network uses one)")
    dep.set_defaults(func=_cmd_deploy)

    from spiking_dqn.search.commands import add_parsers as add_search_parsers

    add_search_parsers(sub, parse_lambda)  # `search` and `calibrate`
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spiking-dqn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        parser.error("--episodes must be positive")
    if getattr(args, "tick_ms", 1.0) <= 0:
        parser.error("--tick-ms must be positive")
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
