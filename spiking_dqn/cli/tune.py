"""``spiking-dqn tune ENV``: search spiking recipes for chip reward up and synaptic events down (:mod:`spiking_dqn.tune`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiking_dqn.cli.arguments import CTRL_C_ERRORS, CLIError, HelpFormatter, add_options, interrupted, is_ctrl_c, read_options
from spiking_dqn.cli.checks import check_output_path
from spiking_dqn.cli.loading import check_env
from spiking_dqn.pipeline.settings import ROBUST_QAT
from spiking_dqn.recipes.hyperparams import ZOO_FILE, hyperparams_for
from spiking_dqn.search.storage import HEARTBEAT_INTERVAL, JOURNAL_FORMS, URL_FORMS, StorageUnavailableError
from spiking_dqn.tune import TuneError, TuneSettings, default_study_name, tune
from spiking_dqn.tune.export import ExportError

#: Where ``spiking-dqn tune ENV`` writes without ``--out``.
RUNS = Path("runs") / "tune"

DESCRIPTION = f"""\
Search SB3 DQN hyperparameters and spiking options (ticks, hidden widths, threshold, beta,
encoding, encoder bounds, ASPEN noise, activity penalty, weight bits) for two objectives: the
chip reward of the deployed program (the fit a user gets on the emulated chip: calibrated
thresholds and the default distillation, guarded by the plain program) up, its synaptic
events per inference down. The first trial is the env's entry of zoo_configs/{ZOO_FILE}
(or the package defaults). Intermediate float rewards feed a median-rule
pruner. The study lives in --storage: the same command resumes it after a kill (finished
trials are kept, a killed one runs again) and, on another machine with the same storage,
joins it; --trials counts every worker's trials. Writes pareto_front.md, .json and .png in
--out, the recommended trial marked; --export writes it as a {ZOO_FILE} entry."""
EPILOG = """examples:
  spiking-dqn tune CartPole-v0 --trials 30 --timesteps 20000 --out runs/tune-cartpole
  spiking-dqn tune CartPole-v0 --trials 30 --timesteps 20000 --storage runs/tune-cartpole.log --n-workers 2 \\
      --out runs/tune-cartpole --export runs/tuned.yml
  python -m rl_zoo3.train --algo dqn --env CartPole-v0 -conf runs/tuned.yml   # train the exported entry"""


@dataclass(kw_only=True)
class TuneOptions:
    """The options of ``spiking-dqn tune``, each declared once with its help."""

    env: str = field(metadata={"help": "Gymnasium environment id with a discrete action space", "positional": True})
    trials: int = field(default=20, metadata={
        "help": "trials of the study, counted over every worker (pruned ones included)", "range": "positive"})
    timesteps: int | None = field(default=None, metadata={
        "help": f"training steps of each trial (default: the n_timesteps of the {ZOO_FILE} entry)", "range": "positive"})
    storage: str | None = field(default=None, metadata={
        "help": f"where the study lives: {URL_FORMS}, or {JOURNAL_FORMS} (default: OUT/study.db, e.g. sqlite:///runs/tune/<env>/study.db)"})
    n_workers: int = field(default=1, metadata={
        "help": "worker processes on this machine (one torch thread each)", "range": "positive"})
    out: Path | None = field(default=None, metadata={
        "help": "output folder: pareto_front.md/.json/.png, trials/<number>/ (default runs/tune/<env>)"})
    export: Path | None = field(default=None, metadata={
        "help": f"YAML file to write the recommended trial into, as a {ZOO_FILE} entry (merged into an existing "
                "file; its other entries are kept)"})
    study_name: str | None = field(default=None, metadata={"help": "study name (default tune-<env>)"})
    episodes: int = field(default=20, metadata={
        "help": "held-out episodes of each trial's chip evaluation", "range": "positive"})
    eval_freq: int | None = field(default=None, metadata={
        "help": "training steps between the intermediate float evaluations that feed the pruner (default: a "
                "fifth of --timesteps; 0: no pruning)", "range": "non_negative"})
    prune_episodes: int = field(default=5, metadata={
        "help": "greedy episodes of each intermediate evaluation", "range": "positive"})
    seed: int = field(default=0, metadata={"help": "training seed of trial n: seed + n"})
    qat_steps: int | None = field(default=None, metadata={
        "help": "distillation steps of each trial's fit to the chip (default: the fit's own rule, "
                f"{ROBUST_QAT.steps} steps, as spiking-dqn deploy runs on a model not fit yet; 0: none, the cheapest fit)",
        "range": "non_negative"})
    heartbeat_interval: int = field(default=HEARTBEAT_INTERVAL, metadata={
        "help": "seconds between heartbeats of running trials; a trial silent for twice as long is run again",
        "range": "positive"})
    progress: bool = field(default=True, metadata={"help": "hide the progress bar"})


def cmd_tune(args: argparse.Namespace) -> int:
    """``spiking-dqn tune`` (Ctrl-C: one line saying how to resume, exit 130)."""
    options: TuneOptions = read_options(args, TuneOptions)
    check_env(options.env)
    _, default_timesteps, _ = hyperparams_for(options.env)
    timesteps = options.timesteps or default_timesteps
    out = options.out or RUNS / options.env
    storage = options.storage or f"sqlite:///{out / 'study.db'}"
    if options.export is not None:
        check_output_path(options.export, "--export", folder=False)
    eval_freq = max(timesteps // 5, 1) if options.eval_freq is None else options.eval_freq
    settings = TuneSettings(env_id=options.env, timesteps=timesteps, episodes=options.episodes, eval_freq=eval_freq,
                            prune_episodes=options.prune_episodes, seed=options.seed, qat_steps=options.qat_steps)
    name = options.study_name or default_study_name(options.env)
    print(f"{options.env}: study {name!r}, {options.trials} trials of {timesteps} steps, {options.n_workers} "
          f"worker(s) here; storage {storage}", flush=True)
    try:
        data = tune(settings, options.trials, storage, out, n_workers=options.n_workers, study_name=name,
                    export=options.export, heartbeat_interval=options.heartbeat_interval, progress=options.progress)
    except (StorageUnavailableError, TuneError, ExportError) as exc:
        raise CLIError(str(exc)) from None
    except CTRL_C_ERRORS as exc:
        if not is_ctrl_c(exc):
            raise
        return interrupted(f"finished trials are kept in {storage}; go on with: {args.command_line}")
    front = data["front"]
    chosen = next((p for p in front if p["number"] == data["recommended"]), None)
    print(f"front: {len(front)} trial(s) of {data['complete']} complete ({data['pruned']} pruned); "
          f"written {out / 'pareto_front.md'}, .json, .png")
    if chosen is not None:
        print(f"recommended: trial {chosen['number']}: chip reward {chosen['reward']:.1f} +- {chosen['reward_std']:.1f}, "
              f"{chosen['events']:.0f} synaptic events per inference ({chosen['folder']})")
    if options.export is not None:
        print(f"exported its {options.env} entry to {options.export}" if chosen is not None
              else f"nothing exported to {options.export}: no trial completed (all pruned)")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``tune`` subcommand to the ``spiking-dqn`` parser.

    :param sub: the parser's subparsers action
    """
    parser = sub.add_parser(
        "tune", help="search spiking recipes: chip reward up, synaptic events down (Optuna, many workers)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter,
    )
    add_options(parser, TuneOptions)
    parser.set_defaults(func=cmd_tune)
