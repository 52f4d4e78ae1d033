"""``spiking-dqn compare``: the float policy against the deployed (emulated or real) chip program."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.table import Table

from spiking_dqn.cli.arguments import LAMBDA_HELP, CLIError, HelpFormatter, parse_lambda, positive_float, positive_int
from spiking_dqn.cli.loading import backend_options, load_program, load_spiking_model, require_env_id
from spiking_dqn.compare import compare
from spiking_dqn.hardware import BACKENDS, ChipConnectionError, ChipProgramError
from spiking_dqn.measurement import resolve_device
from spiking_dqn.report import ComparisonReport

DESCRIPTION = """\
Run the float policy and the chip program on the same episodes and write the report: reward,
action agreement, latency, spikes, synaptic events, estimated energy, plots."""


def print_report(report: ComparisonReport, title: str, chip: str) -> None:
    """Print the summary table of a comparison.

    :param report: the comparison
    :param title: table title
    :param chip: name of the chip column
    """
    table = Table(title=title)
    table.add_column("figure")
    table.add_column(f"float ({report.float_device})")
    table.add_column(chip)
    for row in report.summary_rows():
        table.add_row(*row)
    Console().print(table)


def cmd_compare(args: argparse.Namespace) -> int:
    """``spiking-dqn compare``: run the float and the chip policy on the same episodes, write the report."""
    env_id = require_env_id(args.env, args.model)
    options = backend_options(args.backend, args.eth_ip)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.program is not None:
        load_program(args.program)  # a file that is no chip program: the user's error, said plainly
    model = load_spiking_model(args.model, device=str(device))
    out = args.out or Path("runs") / "compare" / env_id
    try:
        report = compare(
            model, env_id, backend=args.backend, lam=args.lam, program=args.program, n_episodes=args.episodes,
            seed=args.seed, device=device, tick_s=args.tick_ms * 1e-3, progress=not args.no_progress,
            backend_options=options, threshold_scale=args.threshold_scale,
        )
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError, ChipConnectionError) as exc:
        raise CLIError(str(exc)) from None
    except gym.error.Error as exc:
        raise CLIError(f"cannot make environment {env_id!r}: {exc}") from None
    paths = report.write(out)
    chip = "chip" if args.backend == "spinnaker2" else "chip (emulator)"
    print_report(report, f"float vs {chip}: {env_id}, {args.episodes} episodes (seeds {args.seed}..)", chip)
    console = Console()
    console.print(
        f"lambdas {[round(x, 4) for x in report.program.lambdas]}; program: {report.program_source}", soft_wrap=True
    )
    console.print(f"report written to {out} ({', '.join(p.name for p in paths.values())})", soft_wrap=True)
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``compare`` subcommand to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    cmp = sub.add_parser("compare", help="compare the float policy with the deployed (chip or emulator) policy",
                         description=DESCRIPTION, formatter_class=HelpFormatter)
    cmp.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
    cmp.add_argument("--env", default=None,
                     help="environment id (inferred for agents/trained/<env>/model.zip and for a model with the "
                          "eval.json of spiking-dqn train next to it)")
    cmp.add_argument("--backend", choices=list(BACKENDS), default="emulator",
                     help="where the chip program runs")
    cmp.add_argument("--lam", type=parse_lambda, default=None, help=LAMBDA_HELP)
    cmp.add_argument("--program", type=Path, default=None, help="deploy this chip program (.npz) instead of quantizing")
    cmp.add_argument("--episodes", type=positive_int, default=100, help="episodes per policy")
    cmp.add_argument("--seed", type=int, default=0, help="env seed of the first episode (episode i: seed + i)")
    cmp.add_argument("--out", type=Path, default=None, help="report folder (default runs/compare/<env>)")
    cmp.add_argument("--eth-ip", default=None, help="SpiNNaker2 chip address (with --backend spinnaker2)")
    cmp.add_argument("--device", default="auto", help="torch device of the float policy ('auto': CUDA if available)")
    cmp.add_argument("--tick-ms", type=positive_float, default=1.0, help="chip tick duration in ms")
    cmp.add_argument("--threshold-scale", type=positive_float, default=1.0,
                     help="runtime factor on every hidden threshold, of the float policy and the chip alike")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp.set_defaults(func=cmd_compare)
