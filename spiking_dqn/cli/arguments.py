"""Argument types, the help formatter and the user-error type of the ``spiking-dqn`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spiking_dqn.semantics.widths import check_weight_bits
from spiking_dqn.quantization.lambdas import LAMBDA_RULES

#: Options whose value is a comma-separated list that may be mistyped with a leading minus
#: (``--stage1 -1,2``): they are rewritten as ``--stage1=-1,2`` so that the value's own
#: check, not argparse, answers.
LIST_OPTIONS = ("--stage1", "--stage2", "--threshold-scale", "--lam", "--obs-bound", "--net-arch", "--weight-bits")
_NEGATIVE_LIST = re.compile(r"^-[\d.]")
#: Help of every ``--lam`` option.
LAMBDA_HELP = (
    "lambda: 'auto' (a percentile rule per projection), 'mse' (least reconstruction error per projection, the "
    "better rule below 8 bits), one number for every projection (e.g. 3), or one per "
    "projection (3,3,3); default: the model's own grid when it records one (fine-tuned for the chip and snapped "
    "to it), else auto"
)

#: Help of every ``--state-bits`` and ``--state-levels`` option.
STATE_BITS_HELP = (
    "bits of membrane state of the hidden populations, 1..16: 2^N levels over the range the program reaches on "
    "512 observations the float policy visits (with --qat-steps the levels are in the fine-tuning forward: SQUAT); "
    "default: float32 state"
)
STATE_LEVELS_HELP = "level scheme of --state-bits: threshold_centered (dense near the threshold) or uniform"

#: Help of every ``--weight-bits`` option.
WEIGHT_BITS_HELP = (
    "bits per chip weight, 2..8 (integers in +-(2^(bits-1) - 1): 8 -> +-127, 5 -> +-15, 4 -> +-7, 2 -> ternary "
    "{-1,0,1}): one width for every projection (4) or one per projection (8,4,8); default: the model's own grid's "
    "widths, else 8"
)


class CLIError(Exception):
    """A user error: printed as ``error: ...`` with exit status 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs as written (examples keep their lines), defaults shown in the help.

    Defaults of ``None`` and ``False`` (options with no default value, flags) are not shown.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class SubcommandParser(argparse.ArgumentParser):
    """The parser of one subcommand: it refuses unknown options itself, with its own usage.

    (A plain subparser hands them to the top-level parser, which prints the top-level usage.)
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def join_negative_lists(argv: Sequence[str]) -> list[str]:
    """``["--stage1", "-1,2"]`` -> ``["--stage1=-1,2"]`` for the :data:`LIST_OPTIONS`.

    argparse reads a value that starts with ``-`` (and is not a plain number) as an option,
    and answers "expected one argument"; joined, the value reaches its type check.

    :param argv: the command-line arguments
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in LIST_OPTIONS and i + 1 < len(argv) and _NEGATIVE_LIST.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers > 0, e.g. ``0.5,1,2`` (threshold multipliers)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    if not all(v > 0 and math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"multipliers must be positive and finite, got {text!r}")
    return values


def positive_ints(text: str) -> list[int]:
    """Comma-separated integers >= 1, e.g. ``128,128`` (hidden layer sizes)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 64,64, got {text!r}") from None
    if not values or not all(v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got {text!r}")
    return values


def parse_lambda(text: str) -> str | float | list[float]:
    """``--lam`` value: ``"auto"``, ``"mse"``, one number (every projection), or comma-separated numbers (one each)."""
    text = text.strip()
    if text in LAMBDA_RULES:
        return text
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid lambda {text!r}: use 'auto', 'mse', a number (e.g. 3) or one number per projection (e.g. 3,3,3)"
        ) from None
    return values[0] if len(values) == 1 else values


def parse_weight_bits(text: str) -> int | list[int]:
    """``--weight-bits`` value: one width 2..8 (every projection), or comma-separated widths (one each)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid weight bits {text!r}: use an integer 2..8 (e.g. 4) or one per projection (e.g. 8,4,8)"
        ) from None
    value = values[0] if len(values) == 1 else values
    try:
        check_weight_bits(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def parse_scale(text: str) -> float | list[float]:
    """``--threshold-scale`` value: one positive number, or one per hidden layer, comma-separated."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid threshold scale {text!r}: use a number or e.g. 1.2,0.9") from None
    if not all(v > 0 and v != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"threshold scales must be positive and finite, got {text!r}")
    return values[0] if len(values) == 1 else values


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


#: Argument types of the ``"range"`` an options field declares in its metadata, by field type.
_RANGED_TYPES: dict[tuple[Any, str], Callable[[str], Any]] = {
    (int, "positive"): positive_int,
    (int, "non_negative"): non_negative_int,
    (float, "positive"): positive_float,
    (list[int], "positive"): positive_ints,
    (list[float], "positive"): positive_floats,
}


def option_flag(name: str, default: Any) -> str:
    """The command-line flag of an options field: ``--eval-freq``; ``--no-progress`` for a flag on by default."""
    flag = name.replace("_", "-")
    return f"--no-{flag}" if default is True else f"--{flag}"


def add_options(
    parser: argparse.ArgumentParser,
    options: type,
    names: Sequence[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    helps: Mapping[str, str] | None = None,
    ranges: Mapping[str, str] | None = None,
) -> None:
    """Add one option per field of the dataclass ``options`` to ``parser`` (CleanRL's ``Args``).

    A field's ``metadata`` carries its ``help`` and optionally its ``range`` for a checked
    number (``"positive"`` or ``"non_negative"``), its own argument ``type`` (a parser
    function), its ``choices``, ``metavar``, ``required`` and ``positional``; otherwise its type gives the argument
    type (``bool``: a flag, ``--no-<name>`` when it is on by default; a ``Literal``: the choices).

    :param parser: the parser
    :param options: the options dataclass
    :param names: the fields to add, in this order (default: all, in the class's order)
    :param defaults: defaults of this command that differ from the fields'
    :param helps: help texts of this command that differ from the fields'
    :param ranges: ranges of this command that differ from the fields'
    """
    defaults, helps, ranges = dict(defaults or {}), dict(helps or {}), dict(ranges or {})
    hints = typing.get_type_hints(options)
    fields = {f.name: f for f in dataclasses.fields(options)}
    for name in names if names is not None else list(fields):
        f = fields[name]
        default = defaults[name] if name in defaults else _field_default(f)
        help_text = helps.get(name, f.metadata.get("help"))
        kind = _plain_type(hints[name])
        if kind is bool:
            parser.add_argument(option_flag(name, default), action="store_true", help=help_text)
            continue
        kwargs: dict[str, Any] = {"help": help_text}
        if not f.metadata.get("positional"):
            kwargs["default"] = default
        if "choices" in f.metadata or typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(f.metadata.get("choices", typing.get_args(kind)))
        else:
            kwargs["type"] = f.metadata.get("type") or _RANGED_TYPES.get(
                (kind, ranges.get(name, f.metadata.get("range"))), kind
            )
        kwargs.update({key: f.metadata[key] for key in ("metavar", "required") if key in f.metadata})
        flag = name if f.metadata.get("positional") else f"--{name.replace('_', '-')}"
        parser.add_argument(flag, **kwargs)


def read_options(args: argparse.Namespace, options: type, **values: Any) -> Any:
    """The ``options`` dataclass of the options :func:`add_options` added, parsed in ``args``.

    A field the command has no option for keeps its default.

    :param args: the parsed command line
    :param options: the options dataclass
    :param values: fields given here rather than read from ``args``
    """
    for f in dataclasses.fields(options):
        if f.name in values:
            continue
        default = _field_default(f)
        if default is True:
            values[f.name] = not getattr(args, option_flag(f.name, True)[2:].replace("-", "_"), False)
        else:
            values[f.name] = getattr(args, f.name, default)
    return options(**values)


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default (None when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _plain_type(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


#: Exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_CTRL_C = 130


#: What a Ctrl-C can surface as (:func:`is_ctrl_c` tells which ``SystemError`` is one).
CTRL_C_ERRORS = (KeyboardInterrupt, SystemError)


def is_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C: a ``KeyboardInterrupt``, or an error raised because of one.

    numba turns a ``KeyboardInterrupt`` that arrives while a compiled function's first call
    loads its cached code into a ``SystemError`` whose cause is the interrupt; a command catches
    :data:`CTRL_C_ERRORS` and re-raises what this says is not a Ctrl-C.

    :param exc: the exception caught
    """
    seen: BaseException | None = exc
    for _ in range(16):  # a cause chain is short; a cycle ends here
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def interrupted(how_to_resume: str) -> int:
    """End a command stopped by Ctrl-C: close its progress bars, say in one line how to go on; :data:`EXIT_CTRL_C`.

    :param how_to_resume: what was kept and the command that continues, printed after ``interrupted;``
    """
    import gc

    from tqdm import tqdm  # SB3's and the searches' bars; a live one left open fails at exit

    for obj in gc.get_objects():  # a bar the Ctrl-C stopped halfway through its __init__ (tqdm.rich's):
        if issubclass(type(obj), tqdm) and not hasattr(obj, "disable"):  # type(): no object's __class__ is asked
            obj.disable = True  # closing it, or its __del__, would raise; disabled, closing it does nothing
    for bar in list(tqdm._instances):
        bar.close()
    print(f"interrupted; {how_to_resume}", file=sys.stderr)
    return EXIT_CTRL_C
