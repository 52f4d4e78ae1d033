"""``spiking-dqn search``, ``calibrate`` and ``deploy``: fitting a trained model to the chip.

    spiking-dqn search agents/trained/CartPole-v0/model.zip --lam 3 --storage sqlite:///runs/search.db
    spiking-dqn calibrate agents/trained/CartPole-v0/model.zip --lam 3
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --out runs/chip_program.npz
    spiking-dqn deploy runs/train/CartPole-v0/model_trained.zip --env CartPole-v0
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --weight-bits 4 --qat-steps 2000
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --state-bits 8 --state-levels threshold_centered

``search`` and ``calibrate`` quantize the model (``--lam``; with ``--qat-steps N`` after N
steps of fine-tuning for the chip, ``--qat-mode``: distillation by default, never returning a
program worse than plain quantization on the held-out episodes), choose the hidden thresholds on the
backend, evaluate the float policy, the naive program (float threshold x lambda) and the
result on ``--final-episodes`` held-out episodes (seeds from ``--seed + 100000``), print a
summary and write the results to ``--out``. ``deploy`` quantizes (after fine-tuning: by
default :data:`~spiking_dqn.pipeline.ROBUST_QAT` for a model not fit to the chip yet, see
:func:`~spiking_dqn.pipeline.default_qat`), evaluates the float model and the program on
held-out episodes when the environment is known, and writes the chip program. All three are :func:`spiking_dqn.pipeline.fit_to_chip`
with the episode seeds of :meth:`spiking_dqn.pipeline.Seeds.from_base` (``--seed``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from spiking_dqn.cli.arguments import (
    LAMBDA_HELP,
    STATE_BITS_HELP,
    STATE_LEVELS_HELP,
    WEIGHT_BITS_HELP,
    CTRL_C_ERRORS,
    CLIError,
    HelpFormatter,
    add_options,
    interrupted,
    is_ctrl_c,
    parse_lambda,
    parse_scale,
    parse_weight_bits,
    read_options,
)
from spiking_dqn.cli.loading import backend_options, infer_env_id, load_program, load_spiking_model, require_env_id
from spiking_dqn.files import atomic_write
from spiking_dqn.hardware import BACKENDS, ChipProgramError, get_backend
from spiking_dqn.hardware.mapping import map_program
from spiking_dqn.pipeline import (
    EVAL_EPISODES,
    ROBUST_QAT,
    CalibrationSettings,
    FitResult,
    QATSettings,
    SearchSettings,
    Seeds,
    StateSettings,
    default_qat,
    fit_to_chip,
)
from spiking_dqn.quantization import check_program_model
from spiking_dqn.quantization.levels import LEVEL_SCHEMES
from spiking_dqn.pipeline.settings import Method
from spiking_dqn.qat import MODES
from spiking_dqn.recipes.recipe import QAT_CHECK_EPISODES
from spiking_dqn.search import SearchInterrupted, StorageUnavailableError

#: Exit status of an unreachable storage and of an interrupted search (bad input is 2).
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 4
#: Default output of ``spiking-dqn deploy`` (under ``runs/``, which git ignores).
DEFAULT_PROGRAM = Path("runs") / "chip_program.npz"
DEPLOY_DESCRIPTION = (
    "Quantize a trained model (optionally after QAT) into a chip program file (int8 weights, or --weight-bits)."
)
SEARCH_DESCRIPTION = """\
Two-stage threshold grid search on the backend (a global multiplier, then one per hidden
layer; objective: the mean reward), then the naive and the best program on held-out episodes."""
CALIBRATE_DESCRIPTION = """\
Hidden thresholds, per neuron or per layer, that reproduce the float firing rates on recorded
observations (no episodes), then the naive and the calibrated program on held-out episodes."""


ENV_HELP = ("environment id (inferred for agents/trained/<env>/model.zip and for a model with the eval.json of "
            "spiking-dqn train next to it)")
_SEARCH, _CALIBRATION = SearchSettings(), CalibrationSettings()


class ShownGrid(list):
    """A default grid of multipliers as ``--help`` shows it: ``0.354, 0.5, 0.707, ...`` (the values are unchanged)."""

    def __str__(self) -> str:
        return ", ".join(f"{value:.3g}" for value in self)


@dataclass(kw_only=True)
class FitOptions:
    """The options of ``deploy``, ``search`` and ``calibrate``, each declared once with its help.

    A command adds the fields it has (:data:`COMMON`, :data:`SEARCH`, :data:`CALIBRATE`,
    :data:`DEPLOY`), with its own help or default where it says more; the defaults of the
    search and the calibration are those of their settings.
    """

    model: Path = field(metadata={"help": "trained model .zip (DQN with SpikingDQNPolicy)", "positional": True})
    env: str | None = field(default=None, metadata={"help": ENV_HELP})
    lam: str | float | list[float] | None = field(default=None, metadata={"help": LAMBDA_HELP, "type": parse_lambda})
    weight_bits: int | list[int] | None = field(default=None, metadata={
        "help": WEIGHT_BITS_HELP + "; --qat-steps fine-tunes for these widths", "type": parse_weight_bits})
    state_bits: int | None = field(default=None, metadata={"help": STATE_BITS_HELP, "range": "positive"})
    state_levels: str = field(default="threshold_centered", metadata={
        "help": STATE_LEVELS_HELP, "choices": LEVEL_SCHEMES})
    backend: str = field(default="emulator", metadata={
        "help": "where the thresholds are chosen and the programs evaluated", "choices": list(BACKENDS)})
    eth_ip: str | None = field(default=None, metadata={"help": "SpiNNaker2 chip address (with --backend spinnaker2)"})
    seed: int = field(default=0, metadata={"help": "seed of the fit's episodes (see each command)"})
    final_episodes: int | None = field(default=100, metadata={
        "help": "held-out episodes of the final comparison", "range": "positive"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bars"})
    qat_steps: int | None = field(default=0, metadata={
        "help": f"first run this many steps of fine-tuning for the chip (--qat-mode; keep-best on "
        f"{QATSettings().check_episodes} check episodes; the plain quantized program is kept when it does better on "
        "the held-out episodes; the fine-tuned model is saved as model_qat.zip in --out)",
        "range": "non_negative"})
    qat_mode: str = field(default=QATSettings().mode, metadata={
        "help": "fine-tuning of --qat-steps: distill (the quantized network learns the float network's Q-values and "
        "actions: gradient steps), online (DQN's TD updates while acting: environment steps) or replay (TD updates "
        "on the replay buffer)", "choices": MODES})
    program: Path | None = field(default=None, metadata={"help": "start from this chip program instead of --lam"})
    allow_mismatch: bool = field(default=False, metadata={
        "help": "take a --program built from another model (its recorded model digest differs) with a warning "
        "instead of refusing it"})
    storage: str | None = field(default=None, metadata={
        "help": "Optuna storage URL (sqlite:///runs/search.db: resumable; postgresql://...: shared by several "
        "workers); default: in memory"})
    study_name: str = field(default=_SEARCH.study_name, metadata={"help": "prefix of the two study names"})
    stage1: list[float] = field(default_factory=lambda: ShownGrid(_SEARCH.stage1_grid), metadata={
        "help": "stage-1 global multipliers, positive, comma-separated; the default is half-octave steps 2^(k/2), "
        "k = -3..4", "range": "positive"})
    stage2: list[float] = field(default_factory=lambda: ShownGrid(_SEARCH.stage2_factors), metadata={
        "help": "stage-2 per-layer factors around the stage-1 best, positive, comma-separated; the default is "
        "quarter-octave steps 2^(k/4), k = -1..1", "range": "positive"})
    episodes: int = field(default=_SEARCH.episodes, metadata={"help": "episodes per grid point", "range": "positive"})
    heartbeat_interval: int = field(default=_SEARCH.heartbeat_interval, metadata={
        "help": "seconds between heartbeats (database storage)", "range": "positive"})
    observations: int = field(default=_CALIBRATION.n_observations, metadata={
        "help": "recorded observations", "range": "positive"})
    granularity: str = field(default=_CALIBRATION.granularity, metadata={
        "help": "one threshold multiplier per hidden neuron or per hidden layer", "choices": ["neuron", "layer"]})
    objective: str = field(default=_CALIBRATION.objective, metadata={
        "help": "'rates' (match the float firing rates) or 'agreement' (then the common threshold scale that best "
        "reproduces the float actions)", "choices": ["rates", "agreement"]})
    threshold_scale: float | list[float] | None = field(default=None, metadata={
        "help": "multiply the hidden thresholds (chip units) by this, or by one value per hidden layer (e.g. 1.2,0.9)",
        "type": parse_scale})
    out: Path | None = field(default=None, metadata={"help": "output folder"})


#: The options of each command, in the order of its help.
COMMON = ("model", "env", "lam", "weight_bits", "state_bits", "state_levels", "backend", "eth_ip", "seed",
          "final_episodes", "progress", "qat_steps", "qat_mode")
SEARCH = (*COMMON, "program", "allow_mismatch", "storage", "study_name", "stage1", "stage2", "episodes", "heartbeat_interval", "out")
CALIBRATE = (*COMMON, "observations", "granularity", "objective", "out")
DEPLOY = ("model", "lam", "weight_bits", "state_bits", "state_levels", "out", "threshold_scale", "qat_steps",
          "qat_mode", "env", "final_episodes", "seed", "progress")


def _print_warnings(caught: list[warnings.WarningMessage], result: FitResult | None = None) -> None:
    # The fit's own warnings (clipping, saturation), once each; not the deprecation notices of
    # third-party imports (Box2D's SWIG bindings) that "always" also records, nor the fit's gap
    # warning, which _print_final prints as its last line.
    shown = (w for w in caught if not issubclass(w.category, DeprecationWarning))
    gap = None if result is None else result.gap_line()
    for text in dict.fromkeys(str(w.message) for w in shown if str(w.message) != gap):
        print(f"warning: {text}", file=sys.stderr)


def _print_qat(result: FitResult, out: Path | None) -> None:
    qat = result.qat
    if qat is None:
        return
    saved = f", saved to {out / 'model_qat.zip'}" if out is not None and qat.kept else ""
    kept = f"weights kept{saved}" if qat.kept else "no gain: weights restored"
    checks = f" on {result.seeds.qat_checks}.. ({qat.check_inferences} inferences)" if qat.reward_before is not None else ""
    print(f"QAT: reward of the quantized network on the check episodes{checks} {qat.reward_before} -> "
          f"{qat.reward_after} ({kept})")


def _print_final(result: FitResult, title: str) -> None:
    table = Table(title=title)
    for name in ("program", "hidden thresholds (chip units)", "mean reward"):
        table.add_column(name)
    for name, row in result.final().items():
        shown = "-" if row["thresholds"] is None else ", ".join(f"{t:.4g}" for t in row["thresholds"])
        table.add_row(name + (" (chosen)" if name == result.chosen else ""), shown,
                      "-" if row["reward"] is None else f"{row['reward']:.2f}")
    Console().print(table)
    print(result.gap_line())


def _fit(options: FitOptions, method: Method, default_out: str, **settings: Any) -> FitResult:
    """Load the model and run :func:`~spiking_dqn.pipeline.fit_to_chip` for a search/calibrate command.

    :param options: the command's options
    :param method: the threshold method
    :param default_out: output folder under ``runs/`` when ``--out`` is not given
    :param settings: ``search=`` or ``calibration=`` settings of the fit
    :raises CLIError: bad input, unreadable files
    """
    program_path = options.program  # only search has --program
    if options.qat_steps and program_path is not None:
        raise CLIError("--qat-steps trains the model, so it cannot start from a --program file")
    state = _state(options)
    env_id = require_env_id(options.env, options.model)
    model = load_spiking_model(options.model)
    chip = backend_options(options.backend, options.eth_ip)
    out = Path(options.out or Path("runs") / default_out / env_id)
    try:
        program = load_program(program_path) if program_path is not None else None
        if program is not None:
            check_program_model(program, model, options.allow_mismatch, program_name=f"chip program {program_path}")
        backend = get_backend(options.backend, **chip)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_to_chip(
                model, env_id, lam=options.lam, weight_bits=options.weight_bits, program=program,
                qat=QATSettings(options.qat_steps, mode=options.qat_mode), state=state, method=method, backend=backend,
                seeds=Seeds.from_base(options.seed), eval_episodes=options.final_episodes, out=out, save_model=True, progress=options.progress, **settings,
            )
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    _print_warnings(caught, result)
    _print_qat(result, out)
    what = "threshold search" if method == "grid" else "threshold calibration"
    episodes = f"{options.final_episodes} held-out episodes (seeds {result.seeds.evaluation}..)"
    _print_final(result, f"{env_id}: {what}, {episodes}")
    return result


def _state(options: FitOptions) -> StateSettings:
    """The membrane state settings of ``--state-bits`` and ``--state-levels``."""
    try:
        return StateSettings(options.state_bits, options.state_levels)
    except ValueError as exc:
        raise CLIError(f"--state-bits/--state-levels: {exc}") from None


def _print_files(result: FitResult) -> None:
    out = Path(result.files["summary"]).parent
    print(f"results written to {out} ({', '.join(Path(p).name for p in result.files.values())})")


def cmd_search(parsed: argparse.Namespace) -> int:
    """``spiking-dqn search``: two-stage threshold grid search on the backend."""
    options = read_options(parsed, FitOptions)  # --storage checked by spiking_dqn.cli.checks
    settings = SearchSettings(
        stage1_grid=tuple(options.stage1), stage2_factors=tuple(options.stage2), episodes=options.episodes,
        storage=options.storage, study_name=options.study_name, heartbeat_interval=options.heartbeat_interval,
    )
    try:
        result = _fit(options, "grid", "threshold_search", search=settings)
    except StorageUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except SearchInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CTRL_C_ERRORS as exc:
        if not is_ctrl_c(exc):
            raise
        where = (
            f"the finished evaluations are in {options.storage}: run the same command again to resume"
            if options.storage
            else "the study was in memory: pass --storage sqlite:///runs/search.db to make the search resumable"
        )
        return interrupted(where)
    search = result.search
    print(f"best multipliers {[round(m, 4) for m in search.best.multipliers]} (search reward "
          f"{search.best.mean_reward:.2f} over {options.episodes} episodes); cost: {search.backend_episodes} backend "
          f"episodes, {search.backend_inferences} inferences ({search.evaluated_here} evaluations in this run, "
          f"{search.wall_time_s:.1f} s)")
    _print_files(result)
    return 0


def cmd_calibrate(parsed: argparse.Namespace) -> int:
    """``spiking-dqn calibrate``: per-neuron (or per-layer) thresholds from recorded observations."""
    options = read_options(parsed, FitOptions)
    settings = CalibrationSettings(options.observations, objective=options.objective, granularity=options.granularity)
    result = _fit(options, "calibrate", "calibration", calibration=settings)
    cal = result.calibration
    print(f"multipliers {[round(m, 4) for m in cal.multipliers]}"
          f"{' (geometric mean over each layer of the per-neuron ones)' if cal.granularity == 'neuron' else ''} "
          f"(rate-matched {[round(m, 4) for m in cal.rate_multipliers]}, "
          f"scale {cal.scale:.3g}); action agreement with the float policy {cal.agreement:.3f}; cost: "
          f"{cal.backend_inferences} backend inferences in {cal.backend_calls} runs on {cal.n_observations} "
          f"recorded observations, no backend episodes, {cal.wall_time_s:.1f} s")
    _print_files(result)
    return 0


def cmd_deploy(parsed: argparse.Namespace) -> int:
    """``spiking-dqn deploy``: quantize a trained model (optionally after QAT) into a chip program file."""
    options = read_options(parsed, FitOptions)
    model = load_spiking_model(options.model)
    env_id = options.env or infer_env_id(options.model)
    episodes = options.final_episodes
    if episodes is None:
        episodes = EVAL_EPISODES if env_id is not None else 0
    state = _state(options)
    if options.qat_steps or episodes or state.bits is not None:
        env_id = require_env_id(options.env, options.model)
    steps = default_qat(model, None, episodes).steps if options.qat_steps is None else options.qat_steps
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_to_chip(
                model, env_id, lam=options.lam, weight_bits=options.weight_bits,
                qat=QATSettings(steps, mode=options.qat_mode, check_episodes=QAT_CHECK_EPISODES),
                state=state,
                threshold_scale=options.threshold_scale, method="none", seeds=Seeds.from_base(options.seed),
                eval_episodes=episodes, encoder_seed=options.seed, progress=options.progress,
            )
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    options.out.parent.mkdir(parents=True, exist_ok=True)  # only once the options are known to be good
    if result.qat is not None and result.qat.kept:
        with atomic_write(options.out.parent / "model_qat.zip") as tmp:
            model.save(tmp)
    _print_qat(result, options.out.parent)
    program = result.program
    program.save(options.out)
    shown = "the model's own grid, else auto" if options.lam is None else repr(options.lam)
    print(f"quantization report ({options.model}, lam: {shown}):")
    print(result.quantization)
    _print_warnings(caught, result)
    print(program)
    print(f"chip resources (one SpiNNaker2):\n{map_program(program)}")
    print("hidden thresholds (chip units): " + ", ".join(f"{float(t.mean()):.4g}" for t in program.thresholds[:-1]))
    if episodes:
        _print_final(result, f"{env_id}: {episodes} held-out episodes (seeds {result.seeds.evaluation}..)")
    else:
        print("not evaluated: pass --env (or --final-episodes N with it) to play held-out episodes")
    print(f"chip program written to {options.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the ``search``, ``calibrate`` and ``deploy`` subcommands to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    dep = sub.add_parser("deploy", help="quantize a trained model into a chip program file",
                         description=DEPLOY_DESCRIPTION, formatter_class=HelpFormatter)
    add_options(dep, FitOptions, DEPLOY, defaults={"out": DEFAULT_PROGRAM, "final_episodes": None, "qat_steps": None},
                ranges={"final_episodes": "non_negative"}, helps={
        "out": "program file",
        "qat_steps": "first run this many steps of fine-tuning for the chip (--qat-mode; the plain quantized "
                     "program is kept when it does better on the held-out episodes; the fine-tuned model is saved as "
                     f"model_qat.zip next to --out); default: {ROBUST_QAT.steps} for a model not fit to the chip yet "
                     "(its network on no grid, e.g. model_trained.zip) when held-out episodes are played, else 0 "
                     "(spiking-dqn train's model.zip and the shipped agents are fit already); 0: none",
        "env": ENV_HELP + "; needed for --qat-steps and the evaluation",
        "final_episodes": "held-out episodes (env seeds from --seed + 100000) on which the float model and the chip "
                          f"program are evaluated; default {EVAL_EPISODES} when the environment is known, else 0 "
                          "(none)",
        "seed": "seed of the chip's Poisson encoder (if the network uses one), of QAT (checks from seed + 50000) "
                "and of the held-out episodes (seed + 100000)",
    })
    dep.set_defaults(func=cmd_deploy)

    search = sub.add_parser("search", help="two-stage threshold grid search of a saved model on a backend",
                            description=SEARCH_DESCRIPTION, formatter_class=HelpFormatter)
    add_options(search, FitOptions, SEARCH, helps={
        "seed": "seed of the first search episode (episode i: seed + i); held-out episodes from seed + 100000, "
                "QAT checks from seed + 50000",
        "out": "output folder (default runs/threshold_search/<env>)",
    })
    search.set_defaults(func=cmd_search)

    cal = sub.add_parser("calibrate", help="calibrate the thresholds of a saved model on recorded observations",
                         description=CALIBRATE_DESCRIPTION, formatter_class=HelpFormatter)
    add_options(cal, FitOptions, CALIBRATE, helps={
        "seed": "seed of the QAT steps; the observations are recorded from env seed + 10000, QAT checks from "
                "seed + 50000, the held-out episodes from seed + 100000",
        "out": "output folder (default runs/calibration/<env>)",
    })
    cal.set_defaults(func=cmd_calibrate)
