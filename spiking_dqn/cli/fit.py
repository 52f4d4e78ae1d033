"""``spiking-dqn search``, ``calibrate`` and ``deploy``: fitting a trained model to the chip.

    spiking-dqn search agents/trained/CartPole-v0/model.zip --lam 3 --storage sqlite:///runs/search.db
    spiking-dqn calibrate agents/trained/CartPole-v0/model.zip --lam 3
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --out runs/chip_program.npz
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --weight-bits 4 --qat-steps 2000
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --state-bits 8 --state-levels threshold_centered

``search`` and ``calibrate`` quantize the model (``--lam``; with ``--qat-steps N`` after N
online steps of quantization-aware fine-tuning), choose the hidden thresholds on the
backend, evaluate the float policy, the naive program (float threshold x lambda) and the
result on ``--final-episodes`` held-out episodes (seeds from ``--seed + 100000``), print a
summary and write the results to ``--out``. ``deploy`` quantizes (optionally after QAT),
evaluates the float model and the program on held-out episodes when the environment is
known, and writes the chip program. All three are :func:`spiking_dqn.pipeline.fit_to_chip`
with the episode seeds of :meth:`spiking_dqn.pipeline.Seeds.from_base` (``--seed``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from spiking_dqn.cli.arguments import (
    LAMBDA_HELP,
    STATE_BITS_HELP,
    STATE_LEVELS_HELP,
    WEIGHT_BITS_HELP,
    CLIError,
    HelpFormatter,
    non_negative_int,
    parse_lambda,
    parse_scale,
    parse_weight_bits,
    positive_floats,
    positive_int,
)
from spiking_dqn.cli.loading import backend_options, infer_env_id, load_program, load_spiking_model, require_env_id
from spiking_dqn.hardware import BACKENDS, ChipProgramError, get_backend
from spiking_dqn.hardware.mapping import map_program
from spiking_dqn.pipeline import (
    EVAL_EPISODES,
    CalibrationSettings,
    FitResult,
    QATSettings,
    SearchSettings,
    Seeds,
    StateSettings,
    fit_to_chip,
)
from spiking_dqn.quantization.levels import LEVEL_SCHEMES
from spiking_dqn.pipeline.settings import Method
from spiking_dqn.recipes.recipe import QAT_CHECK_EPISODES
from spiking_dqn.search import DEFAULT_STAGE1_GRID, DEFAULT_STAGE2_FACTORS, SearchInterrupted, StorageUnavailableError
from spiking_dqn.search.storage import parse_storage_url

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


def check_storage_url(storage: str | None) -> None:
    """Refuse a malformed ``--storage`` URL or one with an unknown scheme, before any work (exit status 2).

    :param storage: ``--storage`` (None: in memory)
    :raises CLIError: what :func:`spiking_dqn.search.storage.parse_storage_url` refuses
    """
    if storage is None:
        return
    try:
        parse_storage_url(storage)
    except StorageUnavailableError as exc:
        raise CLIError(f"--storage: {exc}") from None


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    # The fit's own warnings (clipping, saturation), once each; not the deprecation notices of
    # third-party imports (Box2D's SWIG bindings) that "always" also records.
    shown = (w for w in caught if not issubclass(w.category, DeprecationWarning))
    for text in dict.fromkeys(str(w.message) for w in shown):
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


def _fit(args: argparse.Namespace, method: Method, default_out: str, **settings: Any) -> FitResult:
    """Load the model and run :func:`~spiking_dqn.pipeline.fit_to_chip` for a search/calibrate command.

    :param args: the parsed command line
    :param method: the threshold method
    :param default_out: output folder under ``runs/`` when ``--out`` is not given
    :param settings: ``search=`` or ``calibration=`` settings of the fit
    :raises CLIError: bad input, unreadable files
    """
    program_path = getattr(args, "program", None)  # only search has --program
    if args.qat_steps and program_path is not None:
        raise CLIError("--qat-steps trains the model, so it cannot start from a --program file")
    state = _state(args)
    env_id = require_env_id(args.env, args.model)
    model = load_spiking_model(args.model)
    options = backend_options(args.backend, args.eth_ip)
    out = Path(args.out or Path("runs") / default_out / env_id)
    try:
        program = load_program(program_path) if program_path is not None else None
        backend = get_backend(args.backend, **options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_to_chip(
                model, env_id, lam=args.lam, weight_bits=args.weight_bits, program=program,
                qat=QATSettings(args.qat_steps), state=state,
                method=method, backend=backend, seeds=Seeds.from_base(args.seed), eval_episodes=args.final_episodes,
                out=out, save_model=True, progress=not args.no_progress, **settings,
            )
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    _print_warnings(caught)
    _print_qat(result, out)
    what = "threshold search" if method == "grid" else "threshold calibration"
    _print_final(result, f"{env_id}: {what}, {args.final_episodes} held-out episodes (seeds {result.seeds.evaluation}..)")
    return result


def _state(args: argparse.Namespace) -> StateSettings:
    """The membrane state settings of ``--state-bits`` and ``--state-levels``."""
    try:
        return StateSettings(args.state_bits, args.state_levels)
    except ValueError as exc:
        raise CLIError(f"--state-bits/--state-levels: {exc}") from None


def _print_files(result: FitResult) -> None:
    out = Path(result.files["summary"]).parent
    print(f"results written to {out} ({', '.join(Path(p).name for p in result.files.values())})")


def cmd_search(args: argparse.Namespace) -> int:
    """``spiking-dqn search``: two-stage threshold grid search on the backend."""
    check_storage_url(args.storage)
    settings = SearchSettings(
        stage1_grid=tuple(args.stage1), stage2_factors=tuple(args.stage2), episodes=args.episodes,
        storage=args.storage, study_name=args.study_name, heartbeat_interval=args.heartbeat_interval,
    )
    try:
        result = _fit(args, "grid", "threshold_search", search=settings)
    except StorageUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except SearchInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        where = (
            f"the finished evaluations are in {args.storage}: run the same command again to resume"
            if args.storage
            else "the study was in memory: pass --storage sqlite:///runs/search.db to make the search resumable"
        )
        print(f"interrupted; {where}", file=sys.stderr)
        return 130
    search = result.search
    print(f"best multipliers {[round(m, 4) for m in search.best.multipliers]} (search reward "
          f"{search.best.mean_reward:.2f} over {args.episodes} episodes); cost: {search.backend_episodes} backend "
          f"episodes, {search.backend_inferences} inferences ({search.evaluated_here} evaluations in this run, "
          f"{search.wall_time_s:.1f} s)")
    _print_files(result)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``spiking-dqn calibrate``: per-neuron (or per-layer) thresholds from recorded observations."""
    settings = CalibrationSettings(args.observations, objective=args.objective, granularity=args.granularity)
    result = _fit(args, "calibrate", "calibration", calibration=settings)
    cal = result.calibration
    print(f"multipliers {[round(m, 4) for m in cal.multipliers]}"
          f"{' (geometric mean over each layer of the per-neuron ones)' if cal.granularity == 'neuron' else ''} "
          f"(rate-matched {[round(m, 4) for m in cal.rate_multipliers]}, "
          f"scale {cal.scale:.3g}); action agreement with the float policy {cal.agreement:.3f}; cost: "
          f"{cal.backend_inferences} backend inferences in {cal.backend_calls} runs on {cal.n_observations} "
          f"recorded observations, no backend episodes, {cal.wall_time_s:.1f} s")
    _print_files(result)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """``spiking-dqn deploy``: quantize a trained model (optionally after QAT) into a chip program file."""
    model = load_spiking_model(args.model)
    env_id = args.env or infer_env_id(args.model)
    episodes = args.final_episodes
    if episodes is None:
        episodes = EVAL_EPISODES if env_id is not None else 0
    state = _state(args)
    if args.qat_steps or episodes or state.bits is not None:
        env_id = require_env_id(args.env, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_to_chip(
                model, env_id, lam=args.lam, weight_bits=args.weight_bits,
                qat=QATSettings(args.qat_steps, check_episodes=QAT_CHECK_EPISODES), state=state,
                threshold_scale=args.threshold_scale, method="none", seeds=Seeds.from_base(args.seed),
                eval_episodes=episodes, encoder_seed=args.seed, progress=not args.no_progress,
            )
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    if result.qat is not None and result.qat.kept:
        model.save(args.out.parent / "model_qat.zip")
    _print_qat(result, args.out.parent)
    program = result.program
    program.save(args.out)
    shown = "the model's own grid, else auto" if args.lam is None else repr(args.lam)
    print(f"quantization report ({args.model}, lam: {shown}):")
    print(result.quantization)
    _print_warnings(caught)
    print(program)
    print(f"chip resources (one SpiNNaker2):\n{map_program(program)}")
    print("hidden thresholds (chip units): " + ", ".join(f"{float(t.mean()):.4g}" for t in program.thresholds[:-1]))
    if episodes:
        _print_final(result, f"{env_id}: {episodes} held-out episodes (seeds {result.seeds.evaluation}..)")
    else:
        print("not evaluated: pass --env (or --final-episodes N with it) to play held-out episodes")
    print(f"chip program written to {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the ``search``, ``calibrate`` and ``deploy`` subcommands to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    lam_help = LAMBDA_HELP
    env_help = ("environment id (inferred for agents/trained/<env>/model.zip and for a model with the eval.json of "
                "spiking-dqn train next to it)")

    def state_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-bits", type=positive_int, default=None, help=STATE_BITS_HELP)
        p.add_argument("--state-levels", choices=list(LEVEL_SCHEMES), default="threshold_centered",
                       help=STATE_LEVELS_HELP)

    def common(p: argparse.ArgumentParser, seed_help: str) -> None:
        p.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
        p.add_argument("--env", default=None, help=env_help)
        p.add_argument("--lam", type=parse_lambda, default=None, help=lam_help)
        p.add_argument("--weight-bits", type=parse_weight_bits, default=None, help=WEIGHT_BITS_HELP)
        state_options(p)
        p.add_argument("--backend", choices=list(BACKENDS), default="emulator",
                       help="where the thresholds are chosen and the programs evaluated")
        p.add_argument("--eth-ip", default=None, help="SpiNNaker2 chip address (with --backend spinnaker2)")
        p.add_argument("--seed", type=int, default=0, help=seed_help)
        p.add_argument("--final-episodes", type=positive_int, default=100,
                       help="held-out episodes of the final comparison")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
        p.add_argument("--qat-steps", type=non_negative_int, default=0,
                       help=f"first run this many online quantization-aware fine-tuning steps (keep-best on "
                            f"{QATSettings().check_episodes} check episodes; the fine-tuned model is saved as "
                            "model_qat.zip in --out)")

    dep = sub.add_parser("deploy", help="quantize a trained model into a chip program file",
                         description=DEPLOY_DESCRIPTION, formatter_class=HelpFormatter)
    dep.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
    dep.add_argument("--lam", type=parse_lambda, default=None, help=lam_help)
    dep.add_argument("--weight-bits", type=parse_weight_bits, default=None, help=WEIGHT_BITS_HELP)
    state_options(dep)
    dep.add_argument("--out", type=Path, default=DEFAULT_PROGRAM, help="program file")
    dep.add_argument("--threshold-scale", type=parse_scale, default=None,
                     help="multiply the hidden thresholds (chip units) by this, or by one value per hidden layer "
                          "(e.g. 1.2,0.9)")
    dep.add_argument("--qat-steps", type=non_negative_int, default=0,
                     help="first run this many online quantization-aware fine-tuning steps (the fine-tuned model is "
                          "saved as model_qat.zip next to --out)")
    dep.add_argument("--env", default=None, help=env_help + "; needed for --qat-steps and the evaluation")
    dep.add_argument("--final-episodes", type=non_negative_int, default=None,
                     help="held-out episodes (env seeds from --seed + 100000) on which the float model and the chip "
                          f"program are evaluated; default {EVAL_EPISODES} when the environment is known, else 0 "
                          "(none)")
    dep.add_argument("--seed", type=int, default=0,
                     help="seed of the chip's Poisson encoder (if the network uses one), of QAT (checks from "
                          "seed + 50000) and of the held-out episodes (seed + 100000)")
    dep.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    dep.set_defaults(func=cmd_deploy)

    search = sub.add_parser("search", help="two-stage threshold grid search of a saved model on a backend",
                            description=SEARCH_DESCRIPTION, formatter_class=HelpFormatter)
    common(search, "seed of the first search episode (episode i: seed + i); held-out episodes from seed + 100000, "
                   "QAT checks from seed + 50000")
    search.add_argument("--program", type=Path, default=None, help="start from this chip program instead of --lam")
    search.add_argument("--storage", default=None, help="Optuna storage URL (sqlite:///runs/search.db: resumable; "
                        "postgresql://...: shared by several workers); default: in memory")
    search.add_argument("--study-name", default="threshold-search", help="prefix of the two study names")
    search.add_argument("--stage1", type=positive_floats, default=list(DEFAULT_STAGE1_GRID),
                        help="stage-1 global multipliers, positive, comma-separated")
    search.add_argument("--stage2", type=positive_floats, default=list(DEFAULT_STAGE2_FACTORS),
                        help="stage-2 per-layer factors around the stage-1 best, positive, comma-separated")
    search.add_argument("--episodes", type=positive_int, default=10, help="episodes per grid point")
    search.add_argument("--heartbeat-interval", type=positive_int, default=10,
                        help="seconds between heartbeats (database storage)")
    search.add_argument("--out", type=Path, default=None, help="output folder (default runs/threshold_search/<env>)")
    search.set_defaults(func=cmd_search)

    cal = sub.add_parser("calibrate", help="calibrate the thresholds of a saved model on recorded observations",
                         description=CALIBRATE_DESCRIPTION, formatter_class=HelpFormatter)
    common(cal, "seed of the QAT steps; the observations are recorded from env seed + 10000, QAT checks from "
                "seed + 50000, the held-out episodes from seed + 100000")
    cal.add_argument("--observations", type=positive_int, default=128, help="recorded observations")
    cal.add_argument("--granularity", choices=["neuron", "layer"], default="neuron",
                     help="one threshold multiplier per hidden neuron or per hidden layer")
    cal.add_argument("--objective", choices=["rates", "agreement"], default="rates",
                     help="'rates' (match the float firing rates) or 'agreement' (then the common threshold scale "
                          "that best reproduces the float actions)")
    cal.add_argument("--out", type=Path, default=None, help="output folder (default runs/calibration/<env>)")
    cal.set_defaults(func=cmd_calibrate)
