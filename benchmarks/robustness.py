"""Does every training seed deploy? The float agent against its chip program, seed by seed, for each fine-tuning.

    python benchmarks/robustness.py --env CartPole-v0 --seeds 0-9            # train what is missing, fit, evaluate
    python benchmarks/robustness.py --env CartPole-v0 --seeds 0-9 --weight-bits 4
    python benchmarks/robustness.py --env Acrobot-v1 --seeds 0 1 --jobs 2    # two agents at once
    python benchmarks/robustness.py --no-run --update-docs                   # tables, plot and docs from the JSON

For each task and training seed the agent is trained through the user's path: the code of
``spiking-dqn train ENV --seed S --qat-steps 0`` (:func:`spiking_dqn.recipes.recipe.train_and_evaluate`
with the task's hyperparameters from ``zoo_configs/dqn.yml``, fine-tuning off), cached in
``--work/<env>/seed<S>/`` (with ``command.txt`` and ``recipe.json``, the steps and hyperparameters
that trained it: a changed entry retrains) so that a re-run or another variant does not retrain.
Then each variant fits a fresh copy of the agent as trained (``model_trained.zip``) to the chip
with :func:`spiking_dqn.pipeline.fit_to_chip` on the emulator (:data:`VARIANTS`):

* ``ptq``: no QAT, threshold calibration (the plain post-training program with calibration);
* ``ptq-search``: no QAT, calibration and the two-stage threshold grid search;
* ``td-qat``: the path before issue 25, the recipe's online TD QAT (:data:`TD_QAT_STEPS` steps, its
  learning rate, 20-episode checks every 1000 steps, best checked weights kept), deployed as
  ``spiking-dqn deploy`` does (no threshold method);
* ``td-qat-small``: the same at :data:`SMALL_LR_FACTOR` times the learning rate;
* ``distill``: QAT by distillation from the float agent (the robust fit's ``ROBUST_QAT``), deploy's method;
* ``default``: ``fit_to_chip``'s defaults, whatever they are when the study runs;
* ``significant``: the defaults with ``selection="significant"`` (the fine-tuned network's own
  program unless another candidate beats it by more than the noise of their paired difference).

The float agent as trained and every chip program play the same ``--episodes`` held-out
episodes (env seeds ``EVAL_SEED`` + i, the recipes' final evaluation, apart from every episode
a fit plays). Rewards are normalised as ``(R - R_worst) / (R_float - R_worst)`` with R_worst
of :func:`envs.rewards.worst_reward`, and checked against the issue's targets
(``robustness_tables.TARGETS``, printed met / not met / open). Wall times: training (the
recipe's record) and each fit, against the path before issue 25 (training plus ``td-qat``).

Rows (one per task, seed and weight width) are merged with those of earlier runs
(``merge.merge_with_previous``; a re-run of some variants keeps the others' figures for the
same agent: the same command and weights, ``model_digest`` in each row, see ``robustness_agents``).
Writes ``robustness.json``, ``robustness.md`` and ``robustness.png`` to ``--out``
(default ``benchmarks/results/``); ``--update-docs`` writes the tables and the plot into
``docs/benchmarks.md`` between ``<!-- robustness:begin/end -->``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch as th  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from tqdm import tqdm  # noqa: E402

from docs_pages import figure_links, update_page  # noqa: E402
from envs.rewards import random_reward  # noqa: E402
from merge import merge_with_previous  # noqa: E402
from robustness_agents import RECIPE_NAME, cached, keep_other_variants, recipe_record, repo_relative  # noqa: E402
from robustness_tables import commands, markdown, normalised, plot, summarise, worst_reward  # noqa: E402
from spiking_dqn.cli.arguments import positive_int  # noqa: E402
from spiking_dqn.pipeline import ROBUST_QAT, QATSettings, fit_to_chip  # noqa: E402
from spiking_dqn.quantization.digest import model_digest  # noqa: E402
from spiking_dqn.recipes.card import replace_card_section  # noqa: E402
from spiking_dqn.recipes.hyperparams import hyperparams_for, qat_learning_rate  # noqa: E402
from spiking_dqn.recipes.recipe import (  # noqa: E402
    EVAL_SEED, QAT_CHECK_EPISODES, QAT_CHECK_FREQ, TRAINED_NAME, TrainOptions, train_and_evaluate, with_overrides,
)
from spiking_dqn.recipes.run_folder import CHECKPOINT_NAME, CheckpointError  # noqa: E402
from spiking_dqn.recipes.versions import machine_line, versions_line  # noqa: E402
from spiking_dqn.rollouts import backend_reward, float_reward  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "robustness"
#: ``td-qat-small``'s learning rate over the recipe's QAT learning rate.
SMALL_LR_FACTOR = 0.2
#: Today's path before issue 25 (the shipped agents' fine-tuning, ``--qat-mode online --qat-steps 10000``):
#: online TD QAT for this many environment steps. Pinned: the package's defaults are now the robust fit's.
TD_QAT_STEPS = 10_000


@dataclasses.dataclass(frozen=True)
class Job:
    """One agent of the study: a task, a training seed and a weight width, and how to measure it.

    :param env_id: Gymnasium id
    :param seed: training seed
    :param weight_bits: bits per weight of the chip programs
    :param variants: the fine-tuning variants to fit (names of :data:`VARIANTS`)
    :param episodes: held-out episodes of the float agent and of each chip program
    :param work: where the trained agents are cached
    :param timesteps: training steps (None: the task's hyperparameters')
    :param qat_steps: QAT steps of the QAT variants (None: the recipe's)
    :param reselect: ``spiking-dqn train --reselect``: the best periodic evaluations whose models are replayed
    """

    env_id: str
    seed: int
    weight_bits: int
    variants: tuple[str, ...]
    episodes: int
    work: Path
    timesteps: int | None = None
    qat_steps: int | None = None
    reselect: int = 1


def _recipe_qat(job: Job, model: DQN, factor: float = 1.0) -> dict[str, Any]:
    """Today's recipe QAT: online TD QAT at the recipe's learning rate times ``factor``, 20-episode checks; deploy's method."""
    rate = qat_learning_rate(job.env_id) or float(model.lr_schedule(0.0))
    steps = TD_QAT_STEPS if job.qat_steps is None else job.qat_steps
    return {"qat": QATSettings(steps, mode="online", learning_rate=rate * factor, check_episodes=QAT_CHECK_EPISODES,
                               check_freq=QAT_CHECK_FREQ), "method": "none"}


def _distill(job: Job, model: DQN) -> dict[str, Any]:
    """The robust fit's distillation (``ROBUST_QAT``), deploy's method."""
    qat = ROBUST_QAT if job.qat_steps is None else dataclasses.replace(ROBUST_QAT, steps=job.qat_steps)
    return {"qat": qat, "method": "none"}


#: Which variant a user's path is, as the seed reports and docs/agents.md say it.
WHICH_IS_YOURS = ("`default` is what `fit_to_chip` does with its defaults (distillation, the threshold search, the "
                  "candidate with the best held-out reward); `spiking-dqn train` and `spiking-dqn deploy` fit without "
                  "the threshold search, as `distill` does (their guard calibrates per layer).")

#: The fine-tuning variants: ``fit_to_chip`` keyword arguments for a job and its fresh model.
VARIANTS: dict[str, Callable[[Job, DQN], dict[str, Any]]] = {
    "ptq": lambda job, model: {"qat": QATSettings(), "method": "calibrate"},  # QATSettings(): no fine-tuning
    "ptq-search": lambda job, model: {"qat": QATSettings(), "method": "both"},
    "td-qat": _recipe_qat,
    "td-qat-small": lambda job, model: _recipe_qat(job, model, SMALL_LR_FACTOR),
    "distill": _distill,
    "default": lambda job, model: {},
    "significant": lambda job, model: {"selection": "significant"},
}


def train(job: Job) -> tuple[Path, dict[str, Any]]:
    """The agent as trained by ``spiking-dqn train``'s code with fine-tuning off, trained unless cached.

    :return: its run folder and the recipe's ``eval.json``
    """
    _, default_timesteps, _ = hyperparams_for(job.env_id)
    timesteps = job.timesteps or default_timesteps
    folder = job.work / job.env_id / f"seed{job.seed}"
    command = shlex.join(["spiking-dqn", "train", job.env_id, "--seed", str(job.seed), "--qat-steps", "0",
                          *(["--timesteps", str(timesteps)] if timesteps != default_timesteps else []),
                          *(["--reselect", str(job.reselect)] if job.reselect != 1 else []),
                          "--no-progress", "--out", repo_relative(folder)])
    hyperparams, _, _ = hyperparams_for(job.env_id)
    if cached(folder, command, hyperparams, timesteps):
        return folder, json.loads((folder / "eval.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    # An interrupted training (a killed run) continues from its checkpoint, as `spiking-dqn train --resume` does.
    resume = (folder / CHECKPOINT_NAME).exists()
    options = TrainOptions(timesteps=timesteps, seed=job.seed, out=folder, progress=False, qat_steps=0, resume=resume,
                           reselect=job.reselect)
    options.check()
    with open(folder.parent / f"seed{job.seed}.log", "a" if resume else "w") as log, redirect_stdout(log):
        try:
            summary = train_and_evaluate(job.env_id, with_overrides(hyperparams, options), options, command)
        except CheckpointError:  # a checkpoint of other settings: start over
            options = dataclasses.replace(options, resume=False)
            summary = train_and_evaluate(job.env_id, with_overrides(hyperparams, options), options, command)
    (folder / "command.txt").write_text(command + "\n")
    (folder / RECIPE_NAME).write_text(json.dumps(recipe_record(hyperparams, timesteps), indent=2) + "\n")
    return folder, summary


def fit_variant(job: Job, name: str, trained: Path) -> dict[str, Any]:
    """Fit a fresh copy of the agent as trained with variant ``name``; its program on the held-out episodes."""
    model = DQN.load(trained, device="cpu")
    settings = VARIANTS[name](job, model)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saturation and the like: the reward says what matters here
        fit = fit_to_chip(model, job.env_id, weight_bits=job.weight_bits, **settings)
        wall = time.perf_counter() - start
        chip = backend_reward(fit.program, job.env_id, job.episodes, seed=EVAL_SEED)
    return {"chip_reward": chip.mean_reward, "chip_std": chip.std_reward, "fit_wall_time_s": round(wall, 2),
            "chosen": fit.chosen, "fit_eval_episodes": fit.eval_episodes, "fit_reward": fit.best.reward,
            "qat_kept": None if fit.qat is None else fit.qat.kept,
            "settings": {k: repr(v) for k, v in settings.items()}}


def measure(job: Job) -> dict[str, Any]:
    """One agent: train (or reuse), evaluate the float agent as trained, fit and evaluate every variant."""
    th.set_num_threads(1)
    folder, record = train(job)
    trained = folder / TRAINED_NAME
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DQN.load(trained, device="cpu")
        floated = float_reward(model, job.env_id, job.episodes, seed=EVAL_SEED)
    fits = {name: fit_variant(job, name, trained) for name in job.variants}
    return {
        "env_id": job.env_id, "variant": point(job.seed, job.weight_bits), "seed": job.seed,
        "weight_bits": job.weight_bits, "episodes": job.episodes, "eval_seed": EVAL_SEED,
        "timesteps": record["timesteps"], "train_wall_time_s": record["train_wall_time_s"],
        "train_command": record["command"], "float_reward": floated.mean_reward, "float_std": floated.std_reward,
        "fits": fits, "model": str(trained.relative_to(ROOT) if trained.is_relative_to(ROOT) else trained),
        "model_digest": model_digest(model),
        "code": code_version(), "packages": versions_line(),
    }


def code_version() -> str:
    """The commit the fits ran on, ``+changes`` when the package's files differ from it (a shared work tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "spiking_dqn", "zoo_configs")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+changes" if changed else "")


def point(seed: int, weight_bits: int) -> str:
    """A row's label and, with its task, its key when runs are merged (``merge_with_previous``'s ``variant``)."""
    return f"seed {seed}" + ("" if weight_bits == 8 else f", {weight_bits}-bit")


def normalise(row: dict[str, Any], random: float) -> dict[str, Any]:
    """``row`` with the random policy's reward, R_worst and each fit's normalised reward."""
    worst = worst_reward(row["env_id"], random)
    for fit in row["fits"].values():
        fit["normalised"] = normalised(fit["chip_reward"], row["float_reward"], worst)
    return {**row, "random_reward": random, "worst": worst}


def run_jobs(jobs: list[Job], processes: int, save: Callable[[list[dict[str, Any]], list[str]], None]
             ) -> tuple[list[dict[str, Any]], list[str]]:
    """Measure ``jobs`` (up to ``processes`` at once, one torch thread each); rows and what failed.

    ``save(rows, failed)`` runs after each agent, so that a killed run keeps the agents it finished.
    """
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    bar = tqdm(total=len(jobs), desc="agents", unit="agent")

    def done(job: Job, row: dict[str, Any] | None, error: BaseException | None) -> None:
        bar.update(1)
        if row is None:
            failed.append(f"{job.env_id} {point(job.seed, job.weight_bits)}: {error!r}")
            return
        rows.append(row)
        figures = ", ".join(f"{k} {v['chip_reward']:.1f}" for k, v in row["fits"].items())
        bar.write(f"{job.env_id} {row['variant']}: float {row['float_reward']:.1f}, chip {figures} "
                  f"(trained in {row['train_wall_time_s']:.0f} s)")
        save(rows, failed)

    if processes <= 1:
        for job in jobs:
            try:
                done(job, measure(job), None)
            except Exception as error:  # keep what the other agents measured
                done(job, None, error)
    else:
        context = multiprocessing.get_context("fork")  # the workers share this module as it is loaded
        with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
            futures: dict[Future, Job] = {pool.submit(measure, job): job for job in jobs}
            for future in as_completed(futures):
                error = future.exception()
                done(futures[future], None if error else future.result(), error)
    bar.close()
    return rows, failed


def update_cards(rows: list[dict[str, Any]]) -> None:
    """Write each task's rows into the shipped agent's model card, section ``seeds``, where the card has one."""
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        card = ROOT / "agents" / "trained" / env_id / "README.md"
        text = card.read_text() if card.exists() else ""
        if "<!-- seeds:begin -->" not in text or "<!-- seeds:end -->" not in text:
            print(f"{env_id}: {card} has no seeds section, not updated")
            continue
        task = [r for r in rows if r["env_id"] == env_id]
        made = " and ".join(f"`{c}`" for c in commands(task))
        replace_card_section(card, "seeds", (
            "## Seed report\n\nDoes a user who trains with their own seed get the recipe's reward, and a chip "
            "program as good as the float agent? The recipe trained on each seed with fine-tuning off, then each "
            f"fine-tuning variant of `fit_to_chip` on the agent as trained (`benchmarks/robustness.py`: {made}; all "
            "figures in `benchmarks/results/robustness.json`, the plot in `benchmarks/results/robustness.png`). "
            + WHICH_IS_YOURS + "\n\n"
            + markdown(task, list(VARIANTS), summarise(task, list(VARIANTS)))))
        print(f"{env_id}: seed report written into {card}")


def parse_seeds(words: list[str]) -> list[int]:
    """``["0-9"]``, ``["0", "3", "5-6"]`` -> the seeds, in order, each once."""
    seeds: list[int] = []
    for word in words:
        low, _, high = word.partition("-")
        seeds += range(int(low), int(high or low) + 1)
    return list(dict.fromkeys(seeds))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="+", default=["CartPole-v0"], help="tasks (Gymnasium ids)")
    parser.add_argument("--seeds", nargs="+", default=["0-9"], help="training seeds: a list and/or ranges, e.g. 0-9")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--weight-bits", type=int, default=8, help="bits per weight of the chip programs")
    parser.add_argument("--episodes", type=int, default=100, help="held-out episodes of every evaluation")
    parser.add_argument("--timesteps", type=int, default=None, help="training steps (default: the task's recipe)")
    parser.add_argument("--reselect", type=positive_int, default=1,
                        help="spiking-dqn train --reselect: replay the models of this many best periodic evaluations")
    parser.add_argument("--qat-steps", type=int, default=None,
                        help=f"QAT steps of the QAT variants (default: {TD_QAT_STEPS} for td-qat, "
                             f"{ROBUST_QAT.steps} for distill)")
    parser.add_argument("--jobs", type=int, default=1, help="agents measured at once (processes, one torch thread each)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the trained agents are cached")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-run", action="store_true", help="measure nothing: tables, plot (and docs) from the JSON")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the tables and plot into docs/benchmarks.md between <!-- robustness:begin/end -->")
    parser.add_argument("--update-card", action="store_true",
                        help="write the tables of the --env tasks into their shipped model cards' seed report "
                             "(section seeds)")
    return parser.parse_args(argv)


def write(args: argparse.Namespace, rows: list[dict[str, Any]], skipped: list[str], command: str,
          randoms: dict[str, float]) -> str:
    """Normalise this run's ``rows``, merge them with the earlier runs' and write the JSON, tables, plot (and docs).

    :param randoms: the random policy's reward by task (measured here for a task not in it yet)
    :return: the tables
    """
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        if env_id not in randoms:
            randoms[env_id] = random_reward(env_id, args.episodes, EVAL_SEED)
    rows = [{**normalise(r, randoms[r["env_id"]]), "command": command} for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "robustness.json"
    rows = keep_other_variants(path, rows)
    rows, _ = merge_with_previous(path, rows, {})
    rows.sort(key=lambda r: (r["env_id"], r["weight_bits"] != 8, r["weight_bits"], r["seed"]))
    summary = summarise(rows, list(VARIANTS))
    data = {"rows": rows, "summary": summary, "skipped": skipped, "last_command": command,
            "machine": machine_line(threads="1 torch thread per process")}
    if args.no_run and path.exists():
        data = {**json.loads(path.read_text()), "rows": rows, "summary": summary}
    path.write_text(json.dumps(data, indent=2) + "\n")
    table = ("Made with " + " and ".join(f"`{c}`" for c in commands(rows))
             + f" (rows merged across runs, each row's own command in robustness.json; last run: `{command}`).\n\n")
    table += markdown(rows, list(VARIANTS), summary)
    (args.out / "robustness.md").write_text(table)
    if rows:
        plot(rows, list(VARIANTS), args.out / "robustness.png")
    if args.update_docs:
        update_page("benchmarks.md", "robustness",
                    table + "\n" + figure_links(args.out, [("normalised chip reward per seed", "robustness.png")]))
    if args.update_card:  # the tasks of --env only: a card keeps its report of a task measured on too few seeds
        update_cards([r for r in rows if r["env_id"] in args.env])
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/robustness.py", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    names = list(args.variants)
    skipped: list[str] = []
    rows: list[dict[str, Any]] = []
    randoms: dict[str, float] = {}
    if not args.no_run:
        jobs = [Job(env_id, seed, args.weight_bits, tuple(names), args.episodes, args.work, args.timesteps,
                    args.qat_steps, args.reselect) for env_id in args.env for seed in parse_seeds(args.seeds)]
        print(f"{command}\n{len(jobs)} agents, variants {', '.join(names)}, {args.jobs} process(es)", flush=True)
        rows, failed = run_jobs(jobs, args.jobs, lambda done, failed: write(
            args, done, skipped + failed, command, randoms))
        skipped += failed
    table = write(args, rows, skipped, command, randoms)
    print(table)
    if skipped:
        print("skipped:", *skipped, sep="\n  ")
    print(f"total wall time {time.perf_counter() - start:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
