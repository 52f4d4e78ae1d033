"""Deploy a shipped agent to the embedded SpiNNaker2 emulator and write its comparison report.

    python -m agents.deploy CartPole-v0
    python -m agents.deploy Acrobot-v1

The recipes end with quantization-aware fine-tuning, so a shipped ``model.zip`` sits on
an int8 grid and ``lam="auto"`` quantizes it with that grid's lambdas. Writes, next to
``agents/trained/<env>/model.zip``:

* ``chip_program.npz``: the int8 chip program (centered readout, lambda ``auto``);
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
import time
import warnings
from pathlib import Path

from stable_baselines3 import DQN

from agents.common import QAT_CHECK_EPISODES, QAT_CHECK_SEED, replace_card_section, trained_model_path
from spiking_dqn.evaluation import compare
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.qat import quantization_aware_finetune, snap_model_to_grid


def deploy(
    env_id: str,
    lam: str | float = "auto",
    qat_steps: int = 0,
    episodes: int = 100,
    seed: int = 0,
    folder: Path | None = None,
    progress: bool = True,
) -> dict:
    """Quantize (optionally after QAT), save the chip program, compare it with the float network.

    :param env_id: a shipped agent's environment
    :param lam: lambda specification
    :param qat_steps: online QAT steps (0: none)
    :param episodes: episodes of the comparison (float and chip)
    :param seed: seed of the first comparison episode (and of QAT)
    :param folder: folder holding ``model.zip`` (default: the shipped agent's)
    :param progress: show progress bars
    :return: the summary written to ``deployment.json``
    """
    folder = Path(folder) if folder is not None else trained_model_path(env_id).parent
    model = DQN.load(folder / "model.zip", device="cpu")
    summary: dict = {"env_id": env_id, "lam": lam, "qat_steps": qat_steps, "episodes": episodes, "seed": seed}
    if qat_steps > 0:
        start = time.perf_counter()
        report = quantization_aware_finetune(
            model, lam, qat_steps, env_id=env_id, check_episodes=QAT_CHECK_EPISODES, check_seed=QAT_CHECK_SEED,
            seed=seed,
        )
        summary["qat"] = report.to_dict() | {"wall_time_s": round(time.perf_counter() - start, 1)}
        lam = report.lambdas
        # The trained network is the fake-quantized one: make the float model compute it.
        snap_model_to_grid(model, lam)
        model.save(folder / "model_qat.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hardware = HardwarePolicy.from_model(model, lam=lam)
    hardware.program.save(folder / "chip_program.npz")
    summary["quantization"] = hardware.quantization_report.to_dict()
    result = compare(model, env_id, program=folder / "chip_program.npz", n_episodes=episodes, seed=seed, progress=progress)
    result.write(folder / "deployment")
    data = result.to_dict()
    summary["figures"] = {
        "float_reward": data["reward"]["float"]["mean"]["value"],
        "chip_reward": data["reward"]["chip"]["mean"]["value"],
        "action_agreement": data["action_agreement"]["value"],
    }
    as_trained = folder / ("model.zip" if qat_steps > 0 else "model_trained.zip")
    fine_tuned = qat_steps > 0 or model.policy.q_net.q_net.snapped_lambdas is not None
    if fine_tuned and as_trained.exists():
        # The agent as trained (before QAT and snapping) against the same chip program.
        original = compare(as_trained, env_id, program=folder / "chip_program.npz", n_episodes=episodes,
                           seed=seed, progress=False).to_dict()
        summary["figures"]["trained_agent_float_reward"] = original["reward"]["float"]["mean"]["value"]
        summary["figures"]["trained_agent_action_agreement"] = original["action_agreement"]["value"]
    (folder / "deployment.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    replace_card_section(folder / "README.md", "deployment", card_section(summary, hardware.program.lambdas))
    for row in result.summary_rows():
        print(f"  {row[0]:<32} float: {row[1]:<28} chip (emulator): {row[2]}")
    print(json.dumps(summary["figures"], indent=2))
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
        f"int8 with lambdas [{', '.join(f'{lam:.2f}' for lam in lambdas)}] (lam `{summary['lam']}`; for an agent "
        "snapped to a QAT grid, that grid) and the centered readout, into `chip_program.npz`. Over "
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
    parser.add_argument("--lam", default="auto", help="lambda: 'auto' or a number")
    parser.add_argument("--qat-steps", type=int, default=0, help="online quantization-aware fine-tuning steps")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lam = args.lam if args.lam == "auto" else float(args.lam)
    deploy(args.env, lam=lam, qat_steps=args.qat_steps, episodes=args.episodes, seed=args.seed)


if __name__ == "__main__":
    main()
