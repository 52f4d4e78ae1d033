"""Deploy a shipped agent to the embedded SpiNNaker2 emulator and write its comparison report.

    python -m agents.deploy CartPole-v0
    python -m agents.deploy Acrobot-v1

The recipes end with quantization-aware fine-tuning, so a shipped ``model.zip`` sits on
an int8 grid, recorded in the network, and the default ``lam`` (``None``) quantizes it on that grid. Writes, next to
``agents/trained/<env>/model.zip``:

* ``chip_program.npz``: the int8 chip program (centered readout, the agent's grid);
* ``model_qat.zip`` when ``--qat-steps`` > 0 (for an agent trained without QAT): the
  float agent after quantization-aware fine-tuning with its weights snapped to the int8
  grid (the float twin of the chip program, which is quantized from it);
* ``deployment/``: the float vs chip comparison (``report.json``, ``report.md``, plots),
  where "float" is the network that was deployed (``model_qat.zip`` after QAT);
* ``deployment.json``: what was done and the headline figures, with the agent as trained
  (``model_trained.zip``, before QAT) against the same chip program when there is one.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from stable_baselines3 import DQN

from agents.common import QAT_CHECK_EPISODES, QAT_CHECK_SEED, replace_card_section, trained_model_path
from spiking_dqn.compare import compare
from spiking_dqn.pipeline import QATSettings, Seeds, fit_to_chip
from spiking_dqn.quantization import LambdaSpec


def deploy(
    env_id: str,
    lam: LambdaSpec = None,
    qat_steps: int = 0,
    episodes: int = 100,
    seed: int = 0,
    folder: Path | None = None,
    progress: bool = True,
) -> dict:
    """Fit to the chip (optionally after QAT), save the chip program, compare it with the float network.

    :param env_id: a shipped agent's environment
    :param lam: lambda specification (``None``: the agent's own grid, else ``"auto"``)
    :param qat_steps: online QAT steps (0: none)
    :param episodes: episodes of the comparison (float and chip)
    :param seed: seed of the first comparison episode (and of QAT's environment)
    :param folder: folder holding ``model.zip`` (default: the shipped agent's)
    :param progress: show progress bars
    :return: the summary written to ``deployment.json``
    """
    folder = Path(folder) if folder is not None else trained_model_path(env_id).parent
    model = DQN.load(folder / "model.zip", device="cpu")
    summary: dict = {"env_id": env_id, "lam": lam, "qat_steps": qat_steps, "episodes": episodes, "seed": seed}
    seeds = Seeds(search=seed, qat_checks=QAT_CHECK_SEED, evaluation=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_to_chip(
            model, env_id, lam=lam, qat=QATSettings(qat_steps, check_episodes=QAT_CHECK_EPISODES), method="none",
            seeds=seeds, eval_episodes=episodes, progress=progress,
        )
    if fit.qat is not None:
        summary["qat"] = fit.qat.to_dict()
        model.save(folder / "model_qat.zip")
    fit.program.save(folder / "chip_program.npz")
    summary["quantization"] = fit.quantization.to_dict()
    result = compare(model, env_id, program=folder / "chip_program.npz", n_episodes=episodes, seed=seed, progress=progress)
    result.write(folder / "deployment")
    data = result.to_dict()
    summary["figures"] = {
        "float_reward": data["reward"]["float"]["mean"]["value"],
        "chip_reward": data["reward"]["chip"]["mean"]["value"],
        "action_agreement": data["action_agreement"]["value"],
    }
    as_trained = folder / ("model.zip" if qat_steps > 0 else "model_trained.zip")
    fine_tuned = qat_steps > 0 or model.policy.q_net.q_net.grid is not None
    if fine_tuned and as_trained.exists():
        # The agent as trained (before QAT and snapping) against the same chip program.
        original = compare(as_trained, env_id, program=folder / "chip_program.npz", n_episodes=episodes,
                           seed=seed, progress=False).to_dict()
        summary["figures"]["trained_agent_float_reward"] = original["reward"]["float"]["mean"]["value"]
        summary["figures"]["trained_agent_action_agreement"] = original["action_agreement"]["value"]
    (folder / "deployment.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    replace_card_section(folder / "README.md", "deployment", card_section(summary, fit.program.lambdas))
    for row in result.summary_rows():
        print(f"  {row[0]:<32} float: {row[1]:<28} chip (emulator): {row[2]}")
    return summary


def card_section(summary: dict, lambdas: list[float]) -> str:
    """The model card's deployment section: what was deployed and the headline figures."""
    figures = summary["figures"]
    command = f"python -m agents.deploy {summary['env_id']}"
    if summary["qat_steps"]:
        command += f" --qat-steps {summary['qat_steps']}"
    float_name = "model_qat.zip" if summary["qat_steps"] else "model.zip"
    trained_name = "model.zip" if summary["qat_steps"] else "model_trained.zip"
    lines = [
        "## Deployment on the emulated SpiNNaker2 chip",
        "",
        "```bash",
        command,
        "```",
        "",
        f"int8 with lambdas [{', '.join(f'{lam:.2f}' for lam in lambdas)}] (lam `{summary['lam'] or 'the agent grid'}`: for an "
        "agent snapped to a QAT grid, that grid, else auto) and the centered readout, into `chip_program.npz`. Over "
        f"{summary['episodes']} episodes (env seeds {summary['seed']}..{summary['seed'] + summary['episodes'] - 1}):",
        "",
        "| policy | mean reward | action agreement with the chip |",
        "| --- | ---: | ---: |",
        f"| float agent, the chip's float twin (`{float_name}`) | {figures['float_reward']:.2f} "
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", choices=["CartPole-v0", "Acrobot-v1"])
    parser.add_argument("--lam", default=None, help="lambda: 'auto' or a number (default: the agent's own grid, else auto)")
    parser.add_argument("--qat-steps", type=int, default=0, help="online quantization-aware fine-tuning steps")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lam = args.lam if args.lam in (None, "auto") else float(args.lam)
    deploy(args.env, lam=lam, qat_steps=args.qat_steps, episodes=args.episodes, seed=args.seed)


if __name__ == "__main__":
    main()
