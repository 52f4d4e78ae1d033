"""Deploying a trained recipe folder: fit it to the chip, save the program, compare it with the float agent.

The demo's deployment step (``spiking-dqn demo``) and ``python -m agents.deploy``: the chip
program, the comparison report and the model card's deployment section in the folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from stable_baselines3 import DQN

from spiking_dqn.compare import compare
from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.pipeline import QATSettings, Seeds, fit_to_chip
from spiking_dqn.quantization import LambdaSpec
from spiking_dqn.recipes.card import replace_card_section, shown_path
from spiking_dqn.recipes.manifest import check_run_folder
from spiking_dqn.recipes.recipe import QAT_CHECK_EPISODES, TRAINED_NAME
from spiking_dqn.report import ComparisonReport


def deploy_and_compare(folder: Path, env_id: str, episodes: int, seed: int = 0, progress: bool = True,
                       lam: LambdaSpec = None, qat_steps: int = 0) -> tuple[dict[str, Any], ComparisonReport]:
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
    :param episodes: episodes of the comparison (float and chip, the same episodes): env seeds
        ``seed .. seed + episodes - 1``
    :param seed: env seed of the first comparison episode (and of QAT)
    :param progress: show the progress bars
    :param lam: lambda specification
    :param qat_steps: steps of fine-tuning for the chip, in ``QATSettings``' default mode (distillation; 0: none)
    :return: the summary written to ``deployment.json`` and the comparison report
    :raises spiking_dqn.recipes.manifest.RunFolderError: ``folder`` holds an unfinished run or mixes two runs
    """
    note = check_run_folder(folder)  # one complete run, or a folder written before manifests (a warning)
    if note is not None:
        warnings.warn(note, stacklevel=2)
    model = DQN.load(folder / "model.zip", device="cpu")
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
        with atomic_write(deployed) as tmp:
            model.save(tmp)
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
        # The agent as trained (before QAT and snapping) against the same chip program, on the same
        # episodes: the program was built from the fine-tuned model, on purpose.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was built from model", category=UserWarning)
            original = compare(as_trained, env_id, program=program_path, n_episodes=episodes, seed=seed,
                               progress=False, allow_mismatch=True).to_dict()
        figures["trained_agent_float_reward"] = original["reward"]["float"]["mean"]["value"]
        figures["trained_agent_action_agreement"] = original["action_agreement"]["value"]
    summary["figures"] = figures
    atomic_write_text(folder / "deployment.json", json.dumps(summary, indent=2, default=str) + "\n")
    on_grid = model.policy.q_net.q_net.grid is not None
    replace_card_section(folder / "README.md", "deployment",
                         card_section(folder, deployed, summary, fit.program.lambdas, on_grid))
    return summary, report


def card_section(
    folder: Path, deployed: Path, summary: dict[str, Any], lambdas: list[float], on_grid: bool = True
) -> str:
    """The model card's deployment section: the commands that redo it and the headline figures.

    :param folder: the training folder
    :param deployed: the deployed float model (``model.zip``, or ``model_qat.zip`` after QAT)
    :param summary: what :func:`deploy_and_compare` writes to ``deployment.json``
    :param lambdas: the program's lambdas
    :param on_grid: ``model.zip`` carries its grid (fit to the chip already): ``spiking-dqn deploy``
        fine-tunes none by default; else the command says ``--qat-steps 0`` when none ran
    """
    figures, episodes, seed = summary["figures"], summary["episodes"], summary["seed"]
    model, program = shown_path(folder / "model.zip"), shown_path(folder / "chip_program.npz")
    steps = summary["qat_steps"]
    qat = f" --qat-steps {steps}" if steps or not on_grid else ""
    twin = shown_path(deployed)
    trained_name = "model.zip" if summary["qat_steps"] else TRAINED_NAME
    lines = [
        "## Deployment on the emulated SpiNNaker2 chip",
        "",
        "```bash",
        f"spiking-dqn deploy {model}{qat} --out {program}",
        f"spiking-dqn compare {twin} --env {summary['env_id']} --program {program} --episodes {episodes} "
        f"--seed {seed} --out {shown_path(folder / 'deployment')}",
        "```",
        "",
        f"int8 with lambdas [{', '.join(f'{lam:.2f}' for lam in lambdas)}] (the agent's own grid, which a fit to "
        "the chip records in `model.zip`, else lam `auto`) and the centered readout, into `chip_program.npz`. Over "
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
