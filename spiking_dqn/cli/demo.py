"""``spiking-dqn demo``: train on CartPole-v0, deploy to the embedded SpiNNaker2 emulator, compare.

Writes into ``--out``: the trained agent and its model card (``model.zip``,
``model_trained.zip``, ``eval.json``, ``README.md``), ``chip_program.npz``, the
comparison report ``deployment/`` and ``deployment.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiking_dqn.cli.arguments import CTRL_C_ERRORS, CLIError, HelpFormatter, add_options, interrupted, is_ctrl_c, read_options
from spiking_dqn.cli.compare import print_report
from spiking_dqn.cli.train import train_env
from spiking_dqn.recipes.deployment import deploy_and_compare
from spiking_dqn.recipes.hyperparams import hyperparams_for
from spiking_dqn.recipes.recipe import TRAINED_NAME, TrainOptions
from spiking_dqn.recipes.run_folder import resume_hint
from spiking_dqn.report import ComparisonReport

#: Default output folder of the demo (``runs/`` is ignored by git).
DEFAULT_OUT = Path("runs") / "demo"
#: The training options the demo passes on, with their help (declared in TrainOptions).
_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainOptions)}
DESCRIPTION = """\
Train a spiking DQN on CartPole-v0 with its recipe, fine-tune it for int8, deploy it to the
embedded SpiNNaker2 emulator and compare the chip with the float agent."""


def seed_range(seed: int, episodes: int) -> str:
    """The env seeds of ``episodes`` episodes from ``seed``: ``"env seeds 0..19"`` (``"env seed 0"`` for one)."""
    return f"env seed {seed}" if episodes == 1 else f"env seeds {seed}..{seed + episodes - 1}"


def print_deployment(report: ComparisonReport, env_id: str, episodes: int, seed: int) -> None:
    """Print the comparison of :func:`~spiking_dqn.recipes.deployment.deploy_and_compare`."""
    print_report(report, f"float vs chip (emulator): {env_id}, {episodes} episodes ({seed_range(seed, episodes)})",
                 "chip (emulator)")


def print_summary(env_id: str, training: dict[str, Any], figures: dict[str, float], episodes: int, seed: int) -> None:
    """The demo's closing summary: every reward in it from the same episodes (the comparison's env seeds).

    :param env_id: Gymnasium id
    :param training: the training summary (``eval.json``)
    :param figures: the deployment's figures (``deployment.json``)
    :param episodes: episodes of the comparison
    :param seed: env seed of its first episode
    """
    print()
    print(f"Result on {env_id} after {training['timesteps']} training steps ({training['train_wall_time_s']:.0f} s), "
          f"float and chip on the same {episodes} deterministic episodes ({seed_range(seed, episodes)}):")
    if "trained_agent_float_reward" in figures:
        print(f"  float agent as trained, before QAT ({TRAINED_NAME}): mean reward "
              f"{figures['trained_agent_float_reward']:.1f}")
        print("  float agent after quantization-aware fine-tuning (model.zip): mean reward "
              f"{figures['float_reward']:.1f}")
    else:
        print(f"  float agent (model.zip): mean reward {figures['float_reward']:.1f}")
    print(f"  on the emulated chip (int8): mean reward {figures['chip_reward']:.1f}, "
          f"action agreement with the float agent {figures['action_agreement']:.1%}")


@dataclass(kw_only=True)
class DemoOptions:
    """The options of ``spiking-dqn demo``, each declared once with its help."""

    env: str = field(default="CartPole-v0", metadata={"help": "environment id (discrete action space)"})
    timesteps: int | None = field(default=None, metadata={
        "help": "training steps (default: the n_timesteps of the env's zoo_configs/dqn.yml entry)", "range": "positive"})
    episodes: int = field(default=20, metadata={"help": "evaluation episodes (float and chip)", "range": "positive"})
    seed: int = field(default=0, metadata={"help": "random seed (training, QAT, first comparison episode)"})
    qat_steps: int = field(default=TrainOptions.qat_steps, metadata={
        "help": "quantization-aware fine-tuning steps (0: none)", "range": "non_negative"})
    out: Path = field(default=DEFAULT_OUT, metadata={"help": "output folder"})
    resume: bool = field(default=False, metadata=_TRAIN_FIELDS["resume"].metadata)
    qat_only: bool = field(default=False, metadata=_TRAIN_FIELDS["qat_only"].metadata)


def cmd_demo(parsed: argparse.Namespace) -> int:
    """``spiking-dqn demo``: train, fine-tune for int8, deploy, compare (Ctrl-C: how to resume, exit 130)."""
    args = read_options(parsed, DemoOptions)
    out: Path = args.out
    resolved = hyperparams_for(args.env)  # read once: the steps and what trains come from one read
    timesteps = resolved[1] if args.timesteps is None else args.timesteps
    options = TrainOptions(out=out, timesteps=timesteps, seed=args.seed, tensorboard_log=str(out / "tb"),
                           eval_episodes=args.episodes, qat_steps=args.qat_steps, resume=args.resume,
                           qat_only=args.qat_only)
    try:
        options.check()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    qat = f", then quantization-aware fine-tuning ({args.qat_steps} steps)" if args.qat_steps else ""
    print(f"[1/2] training a spiking DQN on {args.env} for {options.timesteps} steps (TensorBoard: tensorboard "
          f"--logdir {out / 'tb'}){qat}", flush=True)
    try:
        summary = train_env(args.env, options, parsed.command_line, resolved)
        print(f"[2/2] int8 deployment to the embedded SpiNNaker2 emulator, comparison over {args.episodes} "
              "episodes", flush=True)
        deployment, report = deploy_and_compare(out, args.env, episodes=args.episodes, seed=args.seed)
    except CTRL_C_ERRORS as exc:
        if not is_ctrl_c(exc):
            raise
        return interrupted(resume_hint(options, parsed.command_line))
    print_deployment(report, args.env, args.episodes, args.seed)
    print_summary(args.env, summary, deployment["figures"], args.episodes, args.seed)
    curve = out / "reward_curve.png"
    print(f"Files: {out / 'README.md'} (model card){', ' + str(curve) if curve.exists() else ''}, "
          f"{out / 'chip_program.npz'}, {out / 'deployment' / 'report.md'} (+ PNG plots)")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``demo`` subcommand to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    demo = sub.add_parser("demo", help="the main job: train on CartPole-v0, deploy to the emulator, compare",
                          description=DESCRIPTION, formatter_class=HelpFormatter)
    add_options(demo, DemoOptions)
    demo.set_defaults(func=cmd_demo)
