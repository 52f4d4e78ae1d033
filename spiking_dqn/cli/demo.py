"""``spiking-dqn demo``: train on CartPole-v0, deploy to the embedded SpiNNaker2 emulator, compare.

Writes into ``--out``: the trained agent and its model card (``model.zip``,
``model_trained.zip``, ``eval.json``, ``README.md``), ``chip_program.npz``, the
comparison report ``deployment/`` and ``deployment.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import warnings
from pathlib import Path
from typing import Any

from spiking_dqn.cli.arguments import HelpFormatter, non_negative_int, positive_int
from spiking_dqn.cli.compare import print_report
from spiking_dqn.cli.loading import load_spiking_model
from spiking_dqn.cli.train import train_env
from spiking_dqn.recipes.card import replace_card_section
from spiking_dqn.recipes.hyperparams import hyperparams_for
from spiking_dqn.recipes.recipe import QAT_CHECK_EPISODES, TRAINED_NAME, TrainOptions
from spiking_dqn.compare import compare
from spiking_dqn.pipeline import QATSettings, Seeds, fit_to_chip
from spiking_dqn.quantization import LambdaSpec

#: Default output folder of the demo (``runs/`` is ignored by git).
DEFAULT_OUT = Path("runs") / "demo"
DESCRIPTION = """\
Train a spiking DQN on CartPole-v0 with its recipe, fine-tune it for int8, deploy it to the
embedded SpiNNaker2 emulator and compare the chip with the float agent."""


def deploy_and_compare(folder: Path, env_id: str, episodes: int, seed: int = 0, progress: bool = True,
                       lam: LambdaSpec = None, qat_steps: int = 0) -> dict[str, Any]:
    """Fit ``folder/model.zip`` to the chip, save the chip program, compare it with the float agent.

    The fit (:func:`~spiking_dqn.pipeline.fit_to_chip`, no threshold method) quantizes the
    model on ``lam`` (default: its own grid, else ``"auto"``), after ``qat_steps`` of
    quantization-aware fine-tuning when asked (the fine-tuned model is saved as
    ``model_qat.zip``). Writes ``chip_program.npz``, ``deployment/`` (the comparison report),
    ``deployment.json`` and the model card's deployment section in ``folder``. When the
    deployed model was fine-tuned and snapped to a grid, the agent as it was before (``model.zip``
    after QAT here, else ``model_trained.zip``) is compared with the same program too.

    :param folder: the training folder, with ``model.zip``
    :param env_id: Gymnasium id
    :param episodes: episodes of the comparison (float and chip); env seeds ``seed..``
    :param seed: env seed of the first comparison episode (and of QAT)
    :param progress: show the progress bars
    :param lam: lambda specification
    :param qat_steps: online QAT steps (0: none)
    :return: the summary written to ``deployment.json``
    """
    model = load_spiking_model(folder / "model.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_to_chip(model, env_id, lam=lam, qat=QATSettings(qat_steps, check_episodes=QAT_CHECK_EPISODES),
                          method="none", seeds=Seeds.from_base(seed), eval_episodes=0, progress=progress)
    summary: dict[str, Any] = {"env_id": env_id, "lam": lam, "qat_steps": qat_steps, "episodes": episodes,
                               "seed": seed, "quantization": fit.quantization.to_dict()}
    deployed = folder / "model.zip"
    if fit.qat is not None:
        summary["qat"] = fit.qat.to_dict()
        deployed = folder / "model_qat.zip"
        model.save(deployed)
    program_path = folder / "chip_program.npz"
    fit.program.save(program_path)
    report = compare(model, env_id, program=program_path, n_episodes=episodes, seed=seed, progress=progress)
    report.write(folder / "deployment")
    data = report.to_dict()
    figures = {
        "float_reward": data["reward"]["float"]["mean"]["value"],
        "chip_reward": data["reward"]["chip"]["mean"]["value"],
        "action_agreement": data["action_agreement"]["value"],
    }
    as_trained = folder / ("model.zip" if qat_steps else TRAINED_NAME)
    if model.policy.q_net.q_net.grid is not None and as_trained.exists():
        # The agent as trained (before QAT and snapping) against the same chip program.
        original = compare(as_trained, env_id, program=program_path, n_episodes=episodes, seed=seed,
                           progress=False).to_dict()
        figures["trained_agent_float_reward"] = original["reward"]["float"]["mean"]["value"]
        figures["trained_agent_action_agreement"] = original["action_agreement"]["value"]
    summary["figures"] = figures
    (folder / "deployment.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    replace_card_section(folder / "README.md", "deployment", card_section(folder, deployed, summary, fit.program.lambdas))
    print_report(report, f"float vs chip (emulator): {env_id}, {episodes} episodes (seeds {seed}..)",
                 "chip (emulator)")
    return summary


def card_section(folder: Path, deployed: Path, summary: dict[str, Any], lambdas: list[float]) -> str:
    """The model card's deployment section: the commands that redo it and the headline figures.

    :param folder: the training folder
    :param deployed: the deployed float model (``model.zip``, or ``model_qat.zip`` after QAT)
    :param summary: what :func:`deploy_and_compare` writes to ``deployment.json``
    :param lambdas: the program's lambdas
    """
    figures, episodes, seed = summary["figures"], summary["episodes"], summary["seed"]
    model, program = shlex.quote(str(folder / "model.zip")), shlex.quote(str(folder / "chip_program.npz"))
    qat = f" --qat-steps {summary['qat_steps']}" if summary["qat_steps"] else ""
    twin = shlex.quote(str(deployed))
    trained_name = "model.zip" if summary["qat_steps"] else TRAINED_NAME
    lines = [
        "## Deployment on the emulated SpiNNaker2 chip",
        "",
        "```bash",
        f"spiking-dqn deploy {model}{qat} --out {program}",
        f"spiking-dqn compare {twin} --env {summary['env_id']} --program {program} --episodes {episodes} "
        f"--seed {seed} --out {shlex.quote(str(folder / 'deployment'))}",
        "```",
        "",
        f"int8 with lambdas [{', '.join(f'{lam:.2f}' for lam in lambdas)}] (the agent's own grid when it is "
        "snapped to a QAT grid, else lam `auto`) and the centered readout, into `chip_program.npz`. Over "
        f"{episodes} episodes (env seeds {seed}..{seed + episodes - 1}):",
        "",
        "| policy | mean reward | action agreement with the chip |",
        "| --- | ---: | ---: |",
        f"| float agent, the chip's float twin (`{deployed.name}`) | {figures['float_reward']:.2f} "
        f"| {figures['action_agreement']:.1%} |",
    ]
    if "trained_agent_float_reward" in figures:
        lines.append(
            f"| float agent as trained, before QAT (`{trained_name}`) | {figures['trained_agent_float_reward']:.2f} "
            f"| {figures['trained_agent_action_agreement']:.1%} |"
        )
    lines += [
        f"| chip program on the emulator (`chip_program.npz`) | {figures['chip_reward']:.2f} | - |",
        "",
        "Full comparison (latency, spikes, synaptic events, estimated energy, plots): "
        "[deployment/report.md](deployment/report.md).",
    ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    """``spiking-dqn demo``: train, fine-tune for int8, deploy to the emulator, compare."""
    out: Path = args.out
    _, default_timesteps, _ = hyperparams_for(args.env)
    timesteps = default_timesteps if args.timesteps is None else args.timesteps
    options = TrainOptions(out=out, timesteps=timesteps, seed=args.seed, tensorboard_log=str(out / "tb"),
                           eval_episodes=args.episodes, qat_steps=args.qat_steps)
    print(f"[1/2] training a spiking DQN on {args.env} for {options.timesteps} steps (TensorBoard: tensorboard "
          f"--logdir {out / 'tb'}), then quantization-aware fine-tuning ({args.qat_steps} steps)", flush=True)
    summary = train_env(args.env, options, args.command_line)
    print(f"[2/2] int8 deployment to the embedded SpiNNaker2 emulator, comparison over {args.episodes} episodes",
          flush=True)
    figures = deploy_and_compare(out, args.env, episodes=args.episodes, seed=args.seed)["figures"]
    print()
    print(f"Result on {args.env} after {summary['timesteps']} training steps ({summary['train_wall_time_s']:.0f} s):")
    print(f"  float agent as trained, {args.episodes} deterministic episodes: mean reward "
          f"{summary['trained_mean_reward']:.1f}")
    print(f"  float agent after quantization-aware fine-tuning (model.zip): mean reward {summary['mean_reward']:.1f}")
    print(f"  on the emulated chip (int8): mean reward {figures['chip_reward']:.1f}, "
          f"action agreement with the float agent {figures['action_agreement']:.1%}")
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
    demo.add_argument("--env", default="CartPole-v0", help="environment id (discrete action space)")
    demo.add_argument("--timesteps", type=positive_int, default=None,
                      help="training steps (default: the n_timesteps of the env's zoo_configs/dqn.yml entry)")
    demo.add_argument("--episodes", type=positive_int, default=20, help="evaluation episodes (float and chip)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (training, QAT, first comparison episode)")
    demo.add_argument("--qat-steps", type=non_negative_int, default=10_000,
                      help="quantization-aware fine-tuning steps (0: none)")
    demo.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    demo.set_defaults(func=cmd_demo)
