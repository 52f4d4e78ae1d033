"""``spiking-dqn search``, ``calibrate`` and ``deploy``: fitting a trained model to the chip.

    spiking-dqn search agents/trained/CartPole-v0/model.zip --lam 3 --storage sqlite:///runs/search.db
    spiking-dqn calibrate agents/trained/CartPole-v0/model.zip --lam 3
    spiking-dqn deploy agents/trained/CartPole-v0/model.zip --out runs/chip_program.npz

``search`` and ``calibrate`` quantize the model (``--lam``; with ``--qat-steps N`` after N
online steps of quantization-aware fine-tuning), choose the hidden thresholds on the
backend, evaluate the float policy, the naive program (float threshold x lambda) and the
result on ``--final-episodes`` held-out episodes (seeds from ``--seed + 100000``), print a
summary and write the results to ``--out``. ``deploy`` quantizes (optionally after QAT) and
writes the chip program.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from stable_baselines3 import DQN

from spiking_dqn.cli.arguments import (
    LAMBDA_HELP,
    CLIError,
    HelpFormatter,
    non_negative_int,
    parse_lambda,
    parse_scale,
    positive_floats,
    positive_int,
)
from spiking_dqn.cli.loading import backend_options, load_program, load_spiking_model, require_env_id
from spiking_dqn.cli.recipe import QAT_CHECK_EPISODES, QAT_CHECK_SEED
from spiking_dqn.hardware import Backend, ChipProgram, ChipProgramError, get_backend
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.qat import quantization_aware_finetune, snap_model_to_grid
from spiking_dqn.quantization import quantize_network
from spiking_dqn.rollouts import backend_reward, float_reward
from spiking_dqn.search import (
    DEFAULT_STAGE1_GRID,
    DEFAULT_STAGE2_FACTORS,
    SearchInterrupted,
    StorageUnavailableError,
    calibrate_thresholds,
    threshold_search,
)

#: Exit status of an unreachable storage and of an interrupted search (bad input is 2).
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 4
#: Seed offsets of search/calibrate: held-out final episodes, QAT checks, recorded observations.
FINAL_SEED_OFFSET = 100_000
QAT_CHECK_SEED_OFFSET = 50_000
CALIBRATION_SEED_OFFSET = 10_000
#: Default output of ``spiking-dqn deploy`` (under ``runs/``, which git ignores).
DEFAULT_PROGRAM = Path("runs") / "chip_program.npz"
DEPLOY_DESCRIPTION = "Quantize a trained model (optionally after QAT) into an int8 chip program file."
SEARCH_DESCRIPTION = """\
Two-stage threshold grid search on the backend (a global multiplier, then one per hidden
layer; objective: the mean reward), then the naive and the best program on held-out episodes."""
CALIBRATE_DESCRIPTION = """\
Hidden thresholds, per neuron or per layer, that reproduce the float firing rates on recorded
observations (no episodes), then the naive and the calibrated program on held-out episodes."""


class Prepared:
    """What a search/calibrate command works on.

    :param model: the loaded model (fine-tuned with ``--qat-steps``)
    :param env_id: Gymnasium id
    :param program: the chip program to start from
    :param backend: the backend the thresholds are chosen on
    :param reference: the float network (calibration matches its firing rates)
    :param float_reward: mean reward of the float policy on the held-out episodes
    :param out: output folder
    :param qat: the QAT report (``--qat-steps``), or None
    """

    def __init__(self, model: DQN, env_id: str, program: ChipProgram, backend: Backend, reference: SpikingQNetwork,
                 float_reward: float, out: Path, qat: dict | None) -> None:
        self.model, self.env_id, self.program, self.backend = model, env_id, program, backend
        self.reference, self.float_reward, self.out, self.qat = reference, float_reward, out, qat


def check_storage_url(storage: str | None) -> None:
    """Refuse an Optuna storage URL whose scheme no SQLAlchemy dialect knows, before any work.

    :param storage: ``--storage`` (None: in memory)
    :raises CLIError: malformed URL or unknown scheme
    """
    if storage is None:
        return
    hint = "use sqlite:///runs/search.db (a local file) or postgresql://user:password@host:5432/dbname (a server)"
    try:
        make_url(storage).get_dialect()
    except NoSuchModuleError:
        scheme = storage.split("://", 1)[0] if "://" in storage else storage
        raise CLIError(f"--storage {storage!r}: unknown URL scheme {scheme!r}; {hint}") from None
    except ArgumentError:
        raise CLIError(f"--storage {storage!r} is not a database URL; {hint}") from None


def _qat(model: DQN, lam: Any, steps: int, env_id: str, seed: int, **checks: Any) -> Any:
    print(f"quantization-aware fine-tuning: {steps} online steps ...", flush=True)
    report = quantization_aware_finetune(model, lam, steps, env_id=env_id, seed=seed, **checks)
    if report.kept:
        # The network QAT trained is the fake-quantized one: the float model now computes it,
        # and records the grid, so that the default lam (None) deploys it on this grid later.
        snap_model_to_grid(model, report.grid)
    return report


def _prepare(args: argparse.Namespace, default_out: str) -> Prepared:
    """Model, env id, chip program, backend (and QAT, with ``--qat-steps``) of a search/calibrate command."""
    if args.qat_steps and getattr(args, "program", None) is not None:
        raise CLIError("--qat-steps trains the model, so it cannot start from a --program file")
    env_id = require_env_id(args.env, args.model)
    model = load_spiking_model(args.model)
    options = backend_options(args.backend, args.eth_ip)
    out = Path(args.out or Path("runs") / default_out / env_id)
    net = model.policy.q_net.q_net
    qat = None
    try:
        backend = get_backend(args.backend, **options)
        float_before = float_reward(model, env_id, args.final_episodes,
                                    seed=args.seed + FINAL_SEED_OFFSET).mean_reward
        lam = args.lam
        if args.qat_steps:
            report = _qat(model, lam, args.qat_steps, env_id, args.seed, check_episodes=10,
                          check_seed=args.seed + QAT_CHECK_SEED_OFFSET, backend=backend)
            qat, lam = report.to_dict(), report.lambdas
            if report.kept:
                out.mkdir(parents=True, exist_ok=True)
                model.save(out / "model_qat.zip")
            kept = f"weights kept, saved to {out / 'model_qat.zip'}" if report.kept else "no gain: weights restored"
            print(f"QAT: reward of the quantized network on 10 check episodes {report.reward_before:.2f} -> "
                  f"{report.reward_after:.2f} ({kept})")
        if getattr(args, "program", None) is not None:
            program = load_program(args.program)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                program, _ = quantize_network(net, lam)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    return Prepared(model, env_id, program, backend, net, float_before, out, qat)


def _finish(prep: Prepared, args: argparse.Namespace, label: str, result: Any, key: str, files: dict,
            line: str) -> int:
    """Evaluate the naive and the chosen program on held-out episodes, print, write ``summary.json``."""
    seed = args.seed + FINAL_SEED_OFFSET
    final: dict[str, tuple[list[float] | None, float]] = {"float": (None, prep.float_reward)}
    for name, program in {"naive": prep.program, label: result.program}.items():
        reward = backend_reward(program, prep.env_id, args.final_episodes, seed=seed, backend=prep.backend)
        final[name] = ([float(t.mean()) for t in program.thresholds[:-1]], reward.mean_reward)
    what = "threshold search" if key == "search" else "threshold calibration"
    table = Table(title=f"{prep.env_id}: {what}, {args.final_episodes} held-out episodes (seeds {seed}..)")
    for name in ("program", "hidden thresholds (chip units)", "mean reward"):
        table.add_column(name)
    for name, (thresholds, reward) in final.items():
        shown = "-" if thresholds is None else ", ".join(f"{t:.4g}" for t in thresholds)
        table.add_row(name, shown, f"{reward:.2f}")
    Console().print(table)
    print(line)
    summary = {"env_id": prep.env_id, "final_episodes": args.final_episodes, "final": final, "qat": prep.qat,
               key: result.to_dict()}
    (Path(prep.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results written to {prep.out} ({', '.join(Path(p).name for p in files.values())}, summary.json)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """``spiking-dqn search``: two-stage threshold grid search on the backend."""
    check_storage_url(args.storage)
    prep = _prepare(args, "threshold_search")
    try:
        result = threshold_search(
            prep.program, prep.env_id, backend=prep.backend, stage1_grid=args.stage1, stage2_factors=args.stage2,
            n_episodes=args.episodes, seed=args.seed, storage=args.storage, study_name=args.study_name,
            heartbeat_interval=args.heartbeat_interval, progress_bar=not args.no_progress, output_dir=prep.out,
        )
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
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return _finish(
        prep, args, "searched", result, "search", result.files,
        f"best multipliers {[round(m, 4) for m in result.best.multipliers]} (search reward "
        f"{result.best.mean_reward:.2f} over {args.episodes} episodes); cost: {result.backend_episodes} backend "
        f"episodes, {result.backend_inferences} inferences ({result.evaluated_here} evaluations in this run, "
        f"{result.wall_time_s:.1f} s)",
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``spiking-dqn calibrate``: per-neuron (or per-layer) thresholds from recorded observations."""
    prep = _prepare(args, "calibration")
    try:
        result = calibrate_thresholds(
            prep.reference, prep.program, env_id=prep.env_id, n_observations=args.observations, backend=prep.backend,
            objective=args.objective, granularity=args.granularity, seed=args.seed + CALIBRATION_SEED_OFFSET,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return _finish(
        prep, args, "calibrated", result, "calibration", result.save(prep.out),
        f"multipliers {[round(m, 4) for m in result.multipliers]}"
        f"{' (geometric mean over each layer of the per-neuron ones)' if result.granularity == 'neuron' else ''} "
        f"(rate-matched {[round(m, 4) for m in result.rate_multipliers]}, "
        f"scale {result.scale:.3g}); action agreement with the float policy {result.agreement:.3f}; cost: "
        f"{result.backend_inferences} backend inferences in {result.backend_calls} runs on {result.n_observations} "
        f"recorded observations, no backend episodes, {result.wall_time_s:.1f} s",
    )


def cmd_deploy(args: argparse.Namespace) -> int:
    """``spiking-dqn deploy``: quantize a trained model (optionally after QAT) into a chip program file."""
    model = load_spiking_model(args.model)
    lam = args.lam
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.qat_steps:
        env_id = require_env_id(args.env, args.model)
        report = _qat(model, lam, args.qat_steps, env_id, args.seed, check_episodes=QAT_CHECK_EPISODES,
                      check_seed=QAT_CHECK_SEED)
        lam = report.grid
        if report.kept:
            model.save(args.out.parent / "model_qat.zip")
        print(f"QAT: reward of the quantized network {report.reward_before:.2f} -> {report.reward_after:.2f} "
              f"({'weights kept, saved to ' + str(args.out.parent / 'model_qat.zip') if report.kept else 'no gain'})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hardware = HardwarePolicy.from_model(model, lam=lam, seed=args.seed)
        except (ValueError, TypeError) as exc:
            raise CLIError(str(exc)) from None
    program = hardware.program
    if args.threshold_scale is not None:
        n_hidden = len(program.weights) - 1
        scales = args.threshold_scale if isinstance(args.threshold_scale, list) else [args.threshold_scale] * n_hidden
        if len(scales) != n_hidden:
            raise CLIError(f"--threshold-scale needs one value or {n_hidden} (one per hidden layer), got {len(scales)}")
        program = program.with_thresholds([t * s for t, s in zip(program.thresholds[:-1], scales)]
                                          + [program.thresholds[-1]])
    program.save(args.out)
    shown = "the model's own grid, else auto" if args.lam is None else repr(args.lam)
    print(f"quantization report ({args.model}, lam: {shown}):")
    print(hardware.quantization_report)
    for w in caught:
        print(f"warning: {w.message}")
    print(program)
    print("hidden thresholds (chip units): " + ", ".join(f"{float(t.mean()):.4g}" for t in program.thresholds[:-1]))
    print(f"chip program written to {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add the ``search``, ``calibrate`` and ``deploy`` subcommands to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    lam_help = LAMBDA_HELP
    env_help = ("environment id (inferred for agents/trained/<env>/model.zip and for a model with the eval.json of "
                "spiking-dqn train next to it)")

    def common(p: argparse.ArgumentParser, seed_help: str) -> None:
        p.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
        p.add_argument("--env", default=None, help=env_help)
        p.add_argument("--lam", type=parse_lambda, default=None, help=lam_help)
        p.add_argument("--backend", choices=["emulator", "spinnaker2"], default="emulator",
                       help="where the thresholds are chosen and the programs evaluated")
        p.add_argument("--eth-ip", default=None, help="SpiNNaker2 chip address (with --backend spinnaker2)")
        p.add_argument("--seed", type=int, default=0, help=seed_help)
        p.add_argument("--final-episodes", type=positive_int, default=100,
                       help="held-out episodes of the final comparison")
        p.add_argument("--qat-steps", type=non_negative_int, default=0,
                       help="first run this many online quantization-aware fine-tuning steps (keep-best on 10 check "
                            "episodes; the fine-tuned model is saved as model_qat.zip in --out)")

    dep = sub.add_parser("deploy", help="quantize a trained model into a chip program file",
                         description=DEPLOY_DESCRIPTION, formatter_class=HelpFormatter)
    dep.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
    dep.add_argument("--lam", type=parse_lambda, default=None, help=lam_help)
    dep.add_argument("--out", type=Path, default=DEFAULT_PROGRAM, help="program file")
    dep.add_argument("--threshold-scale", type=parse_scale, default=None,
                     help="multiply the hidden thresholds (chip units) by this, or by one value per hidden layer "
                          "(e.g. 1.2,0.9)")
    dep.add_argument("--qat-steps", type=non_negative_int, default=0,
                     help="first run this many online quantization-aware fine-tuning steps (the fine-tuned model is "
                          "saved as model_qat.zip next to --out)")
    dep.add_argument("--env", default=None, help=env_help + "; only used with --qat-steps")
    dep.add_argument("--seed", type=int, default=0,
                     help="seed of the chip's Poisson encoder (if the network uses one) and of QAT")
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
    search.add_argument("--no-progress", action="store_true", help="hide the progress bars")
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
