"""``spiking-dqn search`` and ``spiking-dqn calibrate``: threshold search and calibration of a saved model.

    spiking-dqn search agents/trained/CartPole-v0/model.zip --lam 3 --storage sqlite:///search.db
    spiking-dqn calibrate agents/trained/CartPole-v0/model.zip --lam 3

Both quantize the model (``--lam``; with ``--qat-steps N`` after N online steps of
quantization-aware fine-tuning), choose the hidden thresholds on the backend, evaluate
the float policy, the naive program (float threshold x lambda) and the result on
``--final-episodes`` held-out episodes (seeds from ``--seed + 100000``), print a summary and
write the results to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

#: Exit status of an unreachable storage and of an interrupted search (bad input is 2).
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 4


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


class Prepared:
    """What a search/calibrate command works on."""

    def __init__(self, model: Any, env_id: str, program: Any, backend: Any, reference: Any, float_reward: float,
                 out: Path, qat: dict | None) -> None:
        self.model, self.env_id, self.program, self.backend = model, env_id, program, backend
        self.reference, self.float_reward, self.out, self.qat = reference, float_reward, out, qat


def _prepare(args: argparse.Namespace, default_out: str) -> Prepared:
    """Model, env id, chip program, backend (and QAT, with ``--qat-steps``) of a search/calibrate command."""
    from spiking_dqn.cli import CLIError, infer_env_id, load_spiking_model
    from spiking_dqn.hardware import ChipProgram, ChipProgramError, get_backend
    from spiking_dqn.quantization import quantize_network
    from spiking_dqn.search import float_reward

    if args.final_episodes < 1:
        raise CLIError("--final-episodes must be positive")
    if getattr(args, "observations", 1) < 1:
        raise CLIError("--observations must be positive")
    if args.qat_steps < 0:
        raise CLIError("--qat-steps must be >= 0")
    if args.qat_steps and getattr(args, "program", None) is not None:
        raise CLIError("--qat-steps trains the model, so it cannot start from a --program file")
    env_id = args.env or infer_env_id(args.model)
    if env_id is None:
        raise CLIError(
            "--env is required: SB3 model files do not store the environment id (it is inferred only for "
            "shipped agents at agents/trained/<env>/model.zip)"
        )
    model = load_spiking_model(args.model)
    options = {}
    if args.backend == "spinnaker2":
        if not args.eth_ip:
            raise CLIError("--backend spinnaker2 needs the chip's address: --eth-ip IP")
        options["eth_ip"] = args.eth_ip
    elif args.eth_ip:
        raise CLIError("--eth-ip is only used with --backend spinnaker2")
    out = Path(args.out or Path("runs") / default_out / env_id)
    net = model.policy.q_net.q_net
    reference, qat = net, None
    try:
        backend = get_backend(args.backend, **options)
        float_before = float_reward(model, env_id, args.final_episodes, seed=args.seed + 100_000).mean_reward
        lam = args.lam
        if args.qat_steps:
            from spiking_dqn.qat import quantization_aware_finetune, snap_model_to_grid

            print(f"quantization-aware fine-tuning: {args.qat_steps} online steps ...", flush=True)
            report = quantization_aware_finetune(
                model, lam, args.qat_steps, env_id=env_id, check_episodes=10, check_seed=args.seed + 50_000,
                backend=backend, seed=args.seed,
            )
            qat = report.to_dict()
            lam = report.lambdas
            if report.kept:
                # The network QAT trained is the fake-quantized one: the float model now computes it,
                # and records the grid, so that lam="auto" deploys it with these lambdas later.
                snap_model_to_grid(model, report.lambdas)
                out.mkdir(parents=True, exist_ok=True)
                model.save(out / "model_qat.zip")
            kept = f"weights kept, saved to {out / 'model_qat.zip'}" if report.kept else "no gain: weights restored"
            print(
                f"QAT: reward of the quantized network on 10 check episodes {report.reward_before:.2f} -> "
                f"{report.reward_after:.2f} ({kept})"
            )
        if getattr(args, "program", None) is not None:
            program = ChipProgram.load(args.program)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                program, _ = quantize_network(net, lam)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, TypeError, FileNotFoundError, ChipProgramError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    return Prepared(model, env_id, program, backend, reference, float_before, out, qat)


def _final_table(rows: list[tuple[str, Any, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("program", "hidden thresholds (chip units)", "mean reward"):
        table.add_column(name)
    for name, thresholds, reward in rows:
        shown = "-" if thresholds is None else ", ".join(f"{t:.4g}" for t in thresholds)
        table.add_row(name, shown, f"{reward:.2f}")
    Console().print(table)


def _evaluate_final(prep: Prepared, programs: dict[str, Any], args: argparse.Namespace):
    from spiking_dqn.search import backend_reward

    seed = args.seed + 100_000
    out = {"float": (None, prep.float_reward)}
    for name, program in programs.items():
        result = backend_reward(program, prep.env_id, args.final_episodes, seed=seed, backend=prep.backend)
        out[name] = ([float(t.mean()) for t in program.thresholds[:-1]], result.mean_reward)
    return out


def cmd_search(args: argparse.Namespace) -> int:
    """``spiking-dqn search``."""
    from spiking_dqn.cli import CLIError
    from spiking_dqn.search import SearchInterrupted, StorageUnavailableError, threshold_search

    prep = _prepare(args, "threshold_search")
    env_id, program, out = prep.env_id, prep.program, prep.out
    try:
        result = threshold_search(
            program,
            env_id,
            backend=prep.backend,
            stage1_grid=args.stage1,
            stage2_factors=args.stage2,
            n_episodes=args.episodes,
            seed=args.seed,
            storage=args.storage,
            study_name=args.study_name,
            heartbeat_interval=args.heartbeat_interval,
            progress_bar=not args.no_progress,
            output_dir=out,
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
            else "the study was in memory: pass --storage sqlite:///search.db to make the search resumable"
        )
        print(f"interrupted; {where}", file=sys.stderr)
        return 130
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return _finish(
        prep,
        args,
        "searched",
        result,
        "search",
        result.files,
        f"best multipliers {[round(m, 4) for m in result.best.multipliers]} (search reward "
        f"{result.best.mean_reward:.2f} over {args.episodes} episodes); cost: {result.backend_episodes} backend "
        f"episodes, {result.backend_inferences} inferences ({result.evaluated_here} evaluations in this run, "
        f"{result.wall_time_s:.1f} s)",
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``spiking-dqn calibrate``."""
    from spiking_dqn.cli import CLIError
    from spiking_dqn.search import calibrate_thresholds

    prep = _prepare(args, "calibration")
    env_id, program, out = prep.env_id, prep.program, prep.out
    try:
        result = calibrate_thresholds(
            prep.reference,
            program,
            env_id=env_id,
            n_observations=args.observations,
            backend=prep.backend,
            objective=args.objective,
            granularity=args.granularity,
            seed=args.seed + 10_000,
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return _finish(
        prep,
        args,
        "calibrated",
        result,
        "calibration",
        result.save(out),
        f"multipliers {[round(m, 4) for m in result.multipliers]}"
        f"{' (geometric mean over each layer of the per-neuron ones)' if result.granularity == 'neuron' else ''} "
        f"(rate-matched {[round(m, 4) for m in result.rate_multipliers]}, "
        f"scale {result.scale:.3g}); action agreement with the float policy {result.agreement:.3f}; cost: "
        f"{result.backend_inferences} backend inferences in {result.backend_calls} runs on {result.n_observations} "
        f"recorded observations, no backend episodes, {result.wall_time_s:.1f} s",
    )


def _finish(prep: Any, args: argparse.Namespace, label: str, result: Any, key: str, files: dict, line: str) -> int:
    """Evaluate the naive and the chosen program on held-out episodes, print, write ``summary.json``."""
    final = _evaluate_final(prep, {"naive": prep.program, label: result.program}, args)
    what = "threshold search" if key == "search" else "threshold calibration"
    _final_table(
        [(name, t, r) for name, (t, r) in final.items()],
        f"{prep.env_id}: {what}, {args.final_episodes} held-out episodes (seeds {args.seed + 100000}..)",
    )
    print(line)
    summary = {"env_id": prep.env_id, "final_episodes": args.final_episodes, "final": final, "qat": prep.qat,
               key: result.to_dict()}
    (Path(prep.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results written to {prep.out} ({', '.join(Path(p).name for p in files.values())}, summary.json)")
    return 0


def add_parsers(sub: Any, lam_type: Any) -> None:
    """Add the ``search`` and ``calibrate`` subcommands to the ``spiking-dqn`` parser."""
    from spiking_dqn.search.grid import DEFAULT_STAGE1_GRID, DEFAULT_STAGE2_FACTORS

    lam_help = "lambda: 'auto' (default), one number for every projection (e.g. 3), or one per projection"

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", type=Path, help="trained model .zip (DQN with SpikingDQNPolicy)")
        p.add_argument("--env", default=None, help="environment id (inferred only for agents/trained/<env>/model.zip)")
        p.add_argument("--lam", type=lam_type, default="auto", help=lam_help)
        p.add_argument("--backend", choices=["emulator", "spinnaker2"], default="emulator")
        p.add_argument("--eth-ip", default=None, help="SpiNNaker2 chip address (with --backend spinnaker2)")
        p.add_argument("--seed", type=int, default=0, help="seed of the first search episode (held-out: +100000)")
        p.add_argument("--final-episodes", type=int, default=100, help="held-out episodes of the final comparison")
        p.add_argument("--qat-steps", type=int, default=0,
                       help="first run this many online quantization-aware fine-tuning steps (keep-best on 10 check "
                            "episodes; the fine-tuned model is saved as model_qat.zip in --out); default 0")

    search = sub.add_parser("search", help="two-stage threshold grid search of a saved model on a backend")
    common(search)
    search.add_argument("--program", type=Path, default=None, help="start from this chip program instead of --lam")
    search.add_argument("--storage", default=None, help="Optuna storage URL (sqlite:///search.db: resumable; "
                        "postgresql://...: shared by several workers); default in memory")
    search.add_argument("--study-name", default="threshold-search", help="prefix of the two study names")
    search.add_argument("--stage1", type=_floats, default=list(DEFAULT_STAGE1_GRID),
                        help="stage-1 global multipliers, comma-separated (default half-octaves 0.35..4)")
    search.add_argument("--stage2", type=_floats, default=list(DEFAULT_STAGE2_FACTORS),
                        help="stage-2 per-layer factors around the stage-1 best (default 0.84,1,1.19)")
    search.add_argument("--episodes", type=int, default=10, help="episodes per grid point (default 10)")
    search.add_argument("--heartbeat-interval", type=int, default=10, help="seconds between heartbeats (database)")
    search.add_argument("--out", type=Path, default=None, help="output folder (default runs/threshold_search/<env>)")
    search.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    search.set_defaults(func=cmd_search)

    cal = sub.add_parser("calibrate", help="calibrate the thresholds of a saved model on recorded observations")
    common(cal)
    cal.add_argument("--observations", type=int, default=128, help="recorded observations (default 128)")
    cal.add_argument("--granularity", choices=["neuron", "layer"], default="neuron",
                     help="one threshold multiplier per hidden neuron (default) or per hidden layer")
    cal.add_argument("--objective", choices=["rates", "agreement"], default="rates",
                     help="'rates' (match the float firing rates; default) or 'agreement' (then the "
                          "common threshold scale that best reproduces the float actions)")
    cal.add_argument("--out", type=Path, default=None, help="output folder (default runs/calibration/<env>)")
    cal.set_defaults(func=cmd_calibrate)
