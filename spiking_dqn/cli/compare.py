"""``spiking-dqn compare``: the float policy against the deployed (emulated or real) chip program."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.table import Table

from spiking_dqn.cli.arguments import LAMBDA_HELP, CLIError, HelpFormatter, add_options, parse_lambda, read_options
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


@dataclass(kw_only=True)
class CompareOptions:
    """The options of ``spiking-dqn compare``, each declared once with its help."""

    model: Path = field(metadata={"help": "trained model .zip (DQN with SpikingDQNPolicy)", "positional": True})
    env: str | None = field(default=None, metadata={
        "help": "environment id (inferred for agents/trained/<env>/model.zip and for a model with the eval.json of "
        "spiking-dqn train next to it)"})
    backend: str = field(default="emulator", metadata={"help": "where the chip program runs", "choices": list(BACKENDS)})
    lam: str | float | list[float] | None = field(default=None, metadata={"help": LAMBDA_HELP, "type": parse_lambda})
    program: Path | None = field(default=None, metadata={
        "help": "deploy this chip program (.npz) instead of quantizing"})
    episodes: int = field(default=100, metadata={"help": "episodes per policy", "range": "positive"})
    seed: int = field(default=0, metadata={"help": "env seed of the first episode (episode i: seed + i)"})
    out: Path | None = field(default=None, metadata={"help": "report folder (default runs/compare/<env>)"})
    eth_ip: str | None = field(default=None, metadata={"help": "SpiNNaker2 chip address (with --backend spinnaker2)"})
    device: str = field(default="auto", metadata={
        "help": "torch device of the float policy ('auto': CUDA if available)"})
    tick_ms: float = field(default=1.0, metadata={"help": "chip tick duration in ms", "range": "positive"})
    threshold_scale: float = field(default=1.0, metadata={
        "help": "runtime factor on every hidden threshold, of the float policy and the chip alike", "range": "positive"})
    allow_mismatch: bool = field(default=False, metadata={
        "help": "compare a --program built from another model (its recorded model digest differs) with a warning "
        "instead of refusing it"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bar"})


def cmd_compare(parsed: argparse.Namespace) -> int:
    """``spiking-dqn compare``: run the float and the chip policy on the same episodes, write the report."""
    args = read_options(parsed, CompareOptions)
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
            seed=args.seed, device=device, tick_s=args.tick_ms * 1e-3, progress=args.progress,
            backend_options=options, threshold_scale=args.threshold_scale, allow_mismatch=args.allow_mismatch,
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
    add_options(cmp, CompareOptions)
    cmp.set_defaults(func=cmd_compare)
