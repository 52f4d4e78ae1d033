"""The model card (``README.md``) and learning curve written next to a trained agent (atomically)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.recipes.manifest import finish_run
from spiking_dqn.recipes.recipe import QAT_CHECK_EPISODES, QAT_CHECK_FREQ, TRAINED_NAME
from spiking_dqn.recipes.versions import versions_line


def write_training_card(out: Path, env_id: str, hyperparams: dict[str, Any], summary: dict[str, Any]) -> None:
    """Plot the learning curve (``reward_curve.png``) and write the model card (``README.md``) in ``out``.

    The last step of a run: the run's manifest (``run.json``, :func:`~spiking_dqn.recipes.manifest.finish_run`)
    is written after them.

    :param out: the training folder (with ``evaluations.npz`` when periodic evaluations ran)
    :param env_id: Gymnasium id
    :param hyperparams: the ``DQN`` keyword arguments trained with
    :param summary: what :func:`~spiking_dqn.recipes.recipe.train_and_evaluate` returned
    """
    plot_learning_curve(out / "evaluations.npz", out / "reward_curve.png", env_id)
    write_model_card(out / "README.md", env_id, hyperparams, summary)
    finish_run(out, str(summary["command"]))


def plot_learning_curve(evaluations: Path, path: Path, env_id: str) -> None:
    """Plot the periodic evaluations of ``EvalCallback`` (mean +- std reward over timesteps).

    :param evaluations: the ``evaluations.npz`` of ``EvalCallback`` (nothing is plotted without it)
    :param path: the PNG file
    :param env_id: Gymnasium id (for the title)
    """
    if not evaluations.exists():
        return
    from spiking_dqn.plots import pyplot

    plt = pyplot()

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
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_model_card(path: Path, env_id: str, hyperparams: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write a short model card: commands, hyperparameters, training, QAT, evaluation.

    :param path: the card file
    :param env_id: Gymnasium id
    :param hyperparams: the ``DQN`` keyword arguments trained with
    :param summary: what :func:`~spiking_dqn.recipes.recipe.train_and_evaluate` returned
    """
    lines = [
        f"# Spiking DQN agent for {env_id}",
        "",
        "Trained with `spiking_dqn.SpikingDQN` (Stable-Baselines3's `DQN` with a compiled gradient step: the same weights) and `spiking_dqn.SpikingDQNPolicy`.",
        "",
        "Command:",
        "",
        "```bash",
        shown_command(str(summary["command"])),
        *([shown_command(_qat_command(summary["qat"]))] if summary["qat"] and summary["qat"].get("command") else []),
        "```",
        "",
        "Hyperparameters:",
        "",
        "```json",
        json.dumps(hyperparams, indent=2, default=str),
        "```",
        "",
        f"- timesteps: {summary['timesteps']} (seed {summary['seed']}); {_selection(summary)}: `{TRAINED_NAME}`",
        f"- training wall time: {summary['train_wall_time_s']} s ({summary['machine']})",
        f"- packages: {versions_line(summary.get('packages'))}",
    ]
    remeasured = summary.get("train_wall_time_remeasured")
    if remeasured:
        lines.append(
            f"- training wall time re-measured on {remeasured['date']} ({remeasured['why']}): "
            f"{remeasured['wall_time_s']} s for the same command and seed ({remeasured['machine']}); that run's agent "
            f"reached a mean of {remeasured['mean_reward']:.1f} over {remeasured['eval_episodes']} episodes (the "
            "files here are from the run above)"
        )
    qat = summary["qat"]
    if qat:
        lines += _qat_lines(qat)
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
    atomic_write_text(path, "\n".join(lines))


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
    atomic_write_text(card, text)


#: What one step of each fine-tuning mode is (records written before modes were QAT's online steps).
QAT_STEPS = {"online": "online steps", "replay": "replay gradient steps",
             "distill": "gradient steps of distillation from the float agent"}


def shown_path(path: str | Path) -> str:
    """``path`` as the cards' commands show it: relative to the working directory when under it (the shipped
    cards then read the same on every checkout), else as given; quoted for the shell."""
    try:
        return shlex.quote(str(Path(path).resolve().relative_to(Path.cwd().resolve())))
    except ValueError:
        return shlex.quote(str(path))


def shown_command(command: str) -> str:
    """A recorded command line as the cards show it: its ``--out`` folder as :func:`shown_path` shows it."""
    try:
        words = shlex.split(command)
    except ValueError:  # not a command line (e.g. "(training command not recorded)")
        return command
    if "--out" not in words[:-1]:
        return command
    at = words.index("--out") + 1
    return " ".join([*map(shlex.quote, words[:at]), shown_path(words[at]), *map(shlex.quote, words[at + 1:])])


def _qat_command(qat: dict[str, Any]) -> str:
    """The recorded ``--qat-only`` command, with the mode and steps it ran (the defaults change: spell them out)."""
    command = qat["command"]
    if "--qat-mode" not in command:
        command += f" --qat-mode {qat.get('mode', 'online')}"
    if "--qat-steps" not in command:
        command += f" --qat-steps {qat['steps']}"
    return command


def _qat_lines(qat: dict[str, Any]) -> list[str]:
    """The card's fine-tuning lines: the steps of its mode, what was kept, and the fit's gap (``qat["fit"]``)."""
    lambdas = ", ".join(f"{lam:.1f}" for lam in qat["lambdas"])
    fit = qat.get("fit")
    if qat["kept"] or fit is None:
        kept = "fine-tuned weights kept" if qat["kept"] else "no improvement: weights as trained kept"
        end = (f"{kept}), then snapped to the grid ({qat['wall_time_s']:.0f} s): `model.zip` is the float twin of the "
               "chip program (`HardwarePolicy.from_model` quantizes it with these lambdas)")
    else:
        end = (f"the plain post-training program `{fit['chosen']}` did better on the held-out episodes: weights as "
               f"trained kept, with its grid and thresholds ({qat['wall_time_s']:.0f} s): `model.zip` deploys to it")
    lines = [
        f"- quantization-aware fine-tuning: {qat['steps']} {QAT_STEPS[qat.get('mode', 'online')]} on the int8 grid of "
        f"lambdas ({lambdas}), weights kept by emulator reward on {QAT_CHECK_EPISODES} check episodes every "
        f"{QAT_CHECK_FREQ} steps ({qat['reward_before']:.1f} before, {qat['reward_after']:.1f} after; {end}",
    ]
    if fit is not None:
        noisy = "; larger than the episodes' noise" if fit["gap_exceeds_noise"] else ""
        lines.append(
            f"- fit to the chip, on the same {fit['eval_episodes']} held-out episodes (env seeds {fit['eval_seed']}..): "
            f"float {fit['reward_float']:.2f}, chip {fit['reward_chip']:.2f} (`{fit['chosen']}`), gap "
            f"{fit['gap']:.2f} +- {fit['gap_noise']:.2f} (2 standard errors){noisy}"
        )
    return lines


def _selection(summary: dict[str, Any]) -> str:
    """How the kept model was chosen: the best periodic evaluation, or the final model when none ran."""
    timesteps, every = summary["timesteps"], summary["eval_freq"]
    if isinstance(timesteps, int) and isinstance(every, int) and timesteps < every:
        return f"the model kept is the final one (no periodic evaluation ran: {timesteps} steps < eval_freq {every})"
    return (
        f"the model kept is the best of the periodic {summary['select_episodes']}-episode evaluations every "
        f"{every} steps (SB3 `EvalCallback`, on other env seeds than the final evaluation)"
    )
