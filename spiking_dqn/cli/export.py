"""``spiking-dqn export``: a trained model or a chip program file as a NIR graph file."""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spiking_dqn.cli.arguments import (
    LAMBDA_HELP,
    WEIGHT_BITS_HELP,
    CLIError,
    HelpFormatter,
    add_options,
    parse_lambda,
    parse_weight_bits,
    read_options,
)
from spiking_dqn.cli.loading import load_program, load_spiking_model
from spiking_dqn.export import write_nir
from spiking_dqn.hardware.mapping import map_program
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_file import ChipProgramError
from spiking_dqn.nir_format import DEFAULT_DT
from spiking_dqn.quantization import quantize_network

DESCRIPTION = """\
Write a chip program as a NIR graph (Input -> [Delay ->] Affine -> LIF/IF -> ... -> Output, the
one-tick synaptic delay as Delay nodes; the chip's ticks, delay, encoder and reset mode in the
graph metadata). MODEL_OR_PROGRAM is a chip
program file (.npz, written by `spiking-dqn deploy`) or a trained model (.zip), which is
quantized first (--lam, --weight-bits). NIR has no reset by subtraction: a consumer other
than spiking_dqn.nir_read.read_nir must take the reset mode from its own configuration. What
snnTorch and Norse do with the graph: docs/nir.md."""


@dataclass(kw_only=True)
class ExportOptions:
    """The options of ``spiking-dqn export``, each declared once with its help."""

    source: Path = field(metadata={
        "help": "chip program file (.npz) or trained model (.zip)", "positional": True, "metavar": "MODEL_OR_PROGRAM"})
    nir: Path = field(metadata={"help": "NIR file to write (e.g. out.nir)", "required": True})
    tick_ms: float = field(default=DEFAULT_DT * 1e3, metadata={
        "help": "tick duration in ms written into the NIR time constants", "range": "positive"})
    lam: str | float | list[float] | None = field(default=None, metadata={
        "help": LAMBDA_HELP + " (a model only)", "type": parse_lambda})
    weight_bits: int | list[int] | None = field(default=None, metadata={
        "help": WEIGHT_BITS_HELP + " (a model only)", "type": parse_weight_bits})
    readout: Literal["if", "lif"] = field(default="if", metadata={
        "help": "node of the readout integrator: 'if' (NIR's IF), or 'lif' (a LIF whose decay is exactly 1, "
                "the form snnTorch 1.0 imports; use it with --tick-ms 0.1, snnTorch's fixed step)"})


def program_from_path(path: Path, lam: Any = None, weight_bits: Any = None) -> ChipProgram:
    """The chip program of a program file, or of a trained model quantized.

    :param path: a chip program ``.npz`` or a model ``.zip``
    :param lam: lambda specification for a model (see ``--lam``)
    :param weight_bits: weight widths for a model (see ``--weight-bits``)
    :raises CLIError: a missing or unreadable file, or quantization options with a program file
    """
    if path.suffix == ".npz":
        if lam is not None or weight_bits is not None:
            raise CLIError("--lam and --weight-bits quantize a model; a chip program file is already quantized")
        return load_program(path)
    model = load_spiking_model(path)
    try:
        program, _ = quantize_network(model.policy.q_net.q_net, lam, weight_bits=weight_bits)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return program


def cmd_export(parsed: argparse.Namespace) -> int:
    """``spiking-dqn export``: write the NIR file."""
    args = read_options(parsed, ExportOptions)
    program = program_from_path(args.source, args.lam, args.weight_bits)
    args.nir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write_nir(program, args.nir, dt=args.tick_ms * 1e-3, readout=args.readout)
    except (ValueError, ChipProgramError) as exc:
        raise CLIError(str(exc)) from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(program)
    print(map_program(program).summary())
    print(f"NIR graph written to {args.nir}")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``export`` subcommand to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    exp = sub.add_parser("export", help="write a model or chip program as a NIR graph file",
                         description=DESCRIPTION, formatter_class=HelpFormatter)
    add_options(exp, ExportOptions)
    exp.set_defaults(func=cmd_export)
