"""Deploy a shipped agent to the embedded SpiNNaker2 emulator and write its comparison report.

    python -m agents.deploy CartPole-v0
    python -m agents.deploy Acrobot-v1
    python -m agents.deploy CartPole-v1
    python -m agents.deploy MountainCar-v0
    python -m agents.deploy LunarLander-v3

The recipes end with quantization-aware fine-tuning, so a shipped ``model.zip`` sits on
an int8 grid, recorded in the network, and the default ``lam`` (``None``) quantizes it on that grid. Writes, next to
``agents/trained/<env>/model.zip``:

It is :func:`spiking_dqn.recipes.deployment.deploy_and_compare` (the demo's deployment step,
which calls :func:`spiking_dqn.pipeline.fit_to_chip`) on the shipped folder:

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
from pathlib import Path

from agents.common import TRAINED_DIR, trained_model_path
from spiking_dqn.cli.demo import print_deployment
from spiking_dqn.recipes.deployment import deploy_and_compare
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
    """Fit a shipped agent to the chip (optionally after QAT), save its program, compare it with the float agent.

    :param env_id: a shipped agent's environment
    :param lam: lambda specification (``None``: the agent's own grid, else ``"auto"``)
    :param qat_steps: steps of fine-tuning for the chip (distillation, ``QATSettings``' default mode; 0: none)
    :param episodes: episodes of the comparison (float and chip)
    :param seed: seed of the first comparison episode (and of QAT's environment)
    :param folder: folder holding ``model.zip`` (default: the shipped agent's)
    :param progress: show progress bars
    :return: the summary written to ``deployment.json``
    """
    folder = Path(folder) if folder is not None else trained_model_path(env_id).parent
    summary, report = deploy_and_compare(folder, env_id, episodes, seed=seed, progress=progress, lam=lam,
                                         qat_steps=qat_steps)
    print_deployment(report, env_id, episodes, seed)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shipped = sorted(folder.name for folder in TRAINED_DIR.iterdir() if (folder / "model.zip").exists())
    parser.add_argument("env", choices=shipped, help="a shipped agent's environment (a folder of agents/trained/)")
    parser.add_argument("--lam", default=None, help="lambda: 'auto' or a number (default: the agent's own grid, else auto)")
    parser.add_argument("--qat-steps", type=int, default=0, help="fine-tuning steps for the chip (distillation; 0: none)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lam = args.lam if args.lam in (None, "auto") else float(args.lam)
    deploy(args.env, lam=lam, qat_steps=args.qat_steps, episodes=args.episodes, seed=args.seed)


if __name__ == "__main__":
    main()
