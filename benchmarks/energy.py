"""Energy as a knob: reward against activity and estimated energy for every energy option, on the emulator.

    python benchmarks/energy.py                          # train what is missing, evaluate, write the tables
    python benchmarks/energy.py --tasks CartPole-v0      # one task
    python benchmarks/energy.py --jobs 2                 # two recipes training at once
    python benchmarks/energy.py --no-train               # tables and plots from the cached models only
    python benchmarks/energy.py --only --update-docs     # tables, plots and docs/energy.md from energy.json alone

For each task (CartPole-v0, Acrobot-v1), every configuration is a chip program run on the
emulator over the same ``--episodes`` held-out episodes (env seeds ``EVAL_SEED`` on):

* ``fixed``: the shipped agent (``agents/trained/<env>/model.zip``) across the runtime
  threshold scales ``SCALES`` (``HardwarePolicy.threshold_scale``);
* ``aspen U(a,b)`` / ``aspen levels``: the recipe trained with ASPEN threshold noise
  (``--threshold-noise``), across the same scales;
* ``penalty c``: the recipe trained with the activity penalty ``c`` (``--activity-penalty``);
* ``adaptive r``: the shipped agent with runtime adaptive thresholds at target rate ``r``;
* ``hybrid a``: the recipe trained with hybrid input coding (``--encoding hybrid``);
* ``ticks n``: the recipe at ``n`` ticks;
* with ``--seeds``: ``fixed (seed s)``, ``aspen U(1,1.5) (seed s)`` and ``aspen U(1,2) (seed s)``,
  the recipe with and without threshold noise retrained on each of those seeds and swept
  over the scales 1.0-2.0, so that ASPEN against the fixed threshold is read seed by seed
  rather than on the shipped seed alone (``energy_seeds.png``).

Every trained variant is the task's recipe (``agents/<task>.py``, its hyperparameters,
timesteps and QAT) with one option changed and the shipped agent's seed; its model is
cached under ``--cache`` (default ``runs/energy/<env>/<variant>/``) with the command that
made it (``command.txt``) and the commit and package versions it was trained with
(``code.txt``, in its rows as ``trained_with``), so that a second run only evaluates.

Per point: mean reward, the reward normalised as in the threshold benchmark
(``(R - R_worst) / (R_ref - R_worst)``, ``R_ref`` the shipped agent's float reward on the same
episodes, ``R_worst`` 0 for CartPole and -500 for Acrobot), synaptic events and hidden
spikes per inference, and the energy model's estimate per inference split into its
time-proportional and activity parts (:mod:`spiking_dqn.hardware.energy`), and latency.

Writes ``energy.json``, ``energy.md`` (the summary, the condensed table and every point),
``energy_scale.png`` (reward vs threshold scale, fixed vs ASPEN) and ``energy_front.png``
(normalised reward vs synaptic events, every configuration) to ``--out`` (default
``benchmarks/results/``); ``--update-docs`` writes the summary, the condensed table and the plots
into ``docs/energy.md`` between ``<!-- energy-table:begin/end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch as th  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from tqdm import tqdm  # noqa: E402

from agents.common import trained_model_path  # noqa: E402
from envs.rewards import worst_reward  # noqa: E402
from spiking_dqn.recipes.card import replace_card_section  # noqa: E402
from spiking_dqn.recipes.versions import machine_line, versions_line  # noqa: E402
from docs_pages import figure_links, update_page  # noqa: E402
from merge import merge_with_previous  # noqa: E402
from energy_tables import (  # noqa: E402
    REPLICATED, ROBUST_SCALES, SEEDS, TARGETS, condensed_markdown, markdown, plot, summarise, summary_markdown,
)
from spiking_dqn import HardwarePolicy  # noqa: E402
from spiking_dqn.hardware import energy  # noqa: E402
from spiking_dqn.rollouts import backend_reward, float_reward  # noqa: E402

TASKS = {"CartPole-v0": "agents.cartpole", "Acrobot-v1": "agents.acrobot"}
#: Runtime threshold scales of the sweeps.
SCALES = (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.4)
#: Worst possible episode reward, the zero of the normalised scale.
#: Target rates of the adaptive-threshold configurations (gain 1). NeuEdge's rule raises a
#: layer's thresholds while it fires below the target, so targets above the agents' rates save spikes.
ADAPTIVE_TARGETS = (0.1, 0.3, 0.5)
EVAL_SEED = 20_000
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "energy"


@dataclass(frozen=True)
class Variant:
    """One configuration of the study.

    :param name: label in the tables and plots
    :param family: ``fixed``, ``aspen``, ``penalty``, ``adaptive``, ``hybrid`` or ``ticks``
    :param recipe_args: recipe options that train it (empty: the shipped agent)
    :param scales: runtime threshold scales to evaluate it at
    :param adaptive: ``HardwarePolicy`` adaptive-threshold rule, or None
    :param seed: training seed (None: the shipped agent's, ``SEEDS``)
    :param of: for a seed replica, the configuration it replicates
    """

    name: str
    family: str
    recipe_args: tuple[str, ...] = ()
    scales: tuple[float, ...] = (1.0,)
    adaptive: dict[str, float] | None = field(default=None, hash=False)
    seed: int | None = None
    of: str = ""

    def training_seed(self, env_id: str) -> int:
        """The seed it is trained with: its own, else the shipped agent's."""
        return SEEDS[env_id] if self.seed is None else self.seed

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in self.name)


#: More ASPEN ranges, tried on CartPole only (a CartPole training takes minutes, an Acrobot one half an hour).
EXTRA_ASPEN = (
    Variant("aspen U(0.8,2)", "aspen", ("--threshold-noise", "0.8,2.0"), SCALES),
    Variant("aspen U(1,2.5)", "aspen", ("--threshold-noise", "1.0,2.5"), SCALES),
    Variant("aspen levels 1,1.25,...,2", "aspen", ("--threshold-noise", "levels:1.0,1.25,1.5,1.75,2.0"), SCALES),
)


def seed_variants(seeds: list[int]) -> list[Variant]:
    """Seed replicas of ``REPLICATED``, swept over ``ROBUST_SCALES``."""
    return [Variant(f"{name} (seed {s})", "seeds", args, ROBUST_SCALES, seed=s, of=name)
            for s in seeds for name, args in REPLICATED]


def variants(env_id: str, seeds: list[int] = ()) -> list[Variant]:
    """The study's configurations for one task (with seed replicas on ``seeds``)."""
    return [
        Variant("fixed", "fixed", scales=SCALES),
        Variant("aspen U(1,1.5)", "aspen", ("--threshold-noise", "1.0,1.5"), SCALES),
        Variant("aspen U(1,2)", "aspen", ("--threshold-noise", "1.0,2.0"), SCALES),
        Variant("aspen U(1,3)", "aspen", ("--threshold-noise", "1.0,3.0"), SCALES),
        Variant("aspen levels 1,1.5,2", "aspen", ("--threshold-noise", "levels:1.0,1.5,2.0"), SCALES),
        *[v for v in EXTRA_ASPEN if env_id == "CartPole-v0"],
        *[Variant(f"penalty {c:g}", "penalty", ("--activity-penalty", f"{c:g}")) for c in (1e-5, 1e-4, 1e-3)],
        *[Variant(f"adaptive {r:g}", "adaptive", adaptive=dict(target_rate=r, gain=1.0)) for r in ADAPTIVE_TARGETS],
        Variant("hybrid 0.5", "hybrid", ("--encoding", "hybrid", "--encoding-alpha", "0.5")),
        *[Variant(f"ticks {n}", "ticks", ("--ticks", str(n))) for n in (6, 8, 10, 12, 16)],
        *seed_variants([s for s in seeds if s != SEEDS[env_id]]),  # the shipped seed's are the rows above
    ]


def in_study_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` by task, then configuration as ``variants`` lists them (seed replicas last, by seed), then scale.

    Runs of subsets (``--only``) append their rows; the tables and the summary read in this order.
    """
    replicated = [name for name, _ in REPLICATED]
    listed = {env_id: [v.name for v in variants(env_id)] for env_id in {r["env_id"] for r in rows}}

    def key(r: dict[str, Any]) -> tuple:
        names = listed[r["env_id"]]
        if r["family"] == "seeds":
            place = (len(names) + 1, r.get("seed", 0), replicated.index(r["of"]) if r.get("of") in replicated else 0)
        else:
            place = (names.index(r["variant"]) if r["variant"] in names else len(names), 0, 0)
        task = list(TASKS).index(r["env_id"]) if r["env_id"] in TASKS else len(TASKS)
        return task, place, r["threshold_scale"]

    return sorted(rows, key=key)


def train(env_id: str, variant: Variant, cache: Path, allow: bool) -> Path | None:
    """The variant's model, trained with the recipe unless cached (None: not cached and not allowed)."""
    if not variant.recipe_args and variant.seed is None:
        return trained_model_path(env_id)
    folder = cache / env_id / variant.slug
    model = folder / "model.zip"
    out = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    command = [sys.executable, "-m", TASKS[env_id], "--seed", str(variant.training_seed(env_id)), "--out", str(out),
               "--no-progress", *variant.recipe_args]
    recorded = folder / "command.txt"
    text = shlex.join(["python", *command[1:]])
    if model.exists() and recorded.exists() and recorded.read_text().strip() == text:
        return model
    if not allow:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{env_id}: training {variant.name}: {text}", flush=True)
    start = time.perf_counter()
    with open(folder / "train.log", "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    recorded.write_text(text + "\n")
    (folder / "code.txt").write_text(code_version() + "\n")
    print(f"{env_id}: {variant.name} trained in {time.perf_counter() - start:.0f} s", flush=True)
    return model


def code_version() -> str:
    """The repository's commit (``+changes`` when the work tree differs) and the packages (:func:`versions_line`)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    commit += "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{commit} {versions_line()}"


def evaluate(env_id: str, variant: Variant, model_path: Path, episodes: int, reference: float) -> list[dict[str, Any]]:
    """One row per threshold scale of the variant."""
    model = DQN.load(model_path, device="cpu")
    code = model_path.parent / "code.txt"
    trained_with = code.read_text().strip() if code.exists() else "not recorded"
    rows = []
    for scale in variant.scales:
        policy = HardwarePolicy.from_model(model, threshold_scale=scale, adaptive_thresholds=variant.adaptive)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # output saturation is reported in the row
            result = backend_reward(policy, env_id, episodes, seed=EVAL_SEED)
        stats = result.cost
        est = energy.estimate(result.synaptic_events_per_inference, policy.program)
        rows.append({
            "env_id": env_id, "variant": variant.name, "family": variant.family, "threshold_scale": scale,
            "seed": variant.training_seed(env_id), "of": variant.of or variant.name,
            "ticks": policy.program.ticks, "mean_reward": result.mean_reward, "std_reward": result.std_reward,
            "normalised_reward": (result.mean_reward - worst_reward(env_id)) / (reference - worst_reward(env_id)),
            "synaptic_events": result.synaptic_events_per_inference,
            "hidden_spikes": result.hidden_spikes_per_inference,
            "energy_time_j": est.time_energy_j, "energy_activity_j": est.activity_energy_j,
            "energy_total_j": est.total_energy_j, "latency_s": est.latency_s,
            "saturated_fraction": stats.saturated / max(stats.inferences, 1),
            "model": str(model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT) else model_path),
            "trained_with": trained_with,
        })
    return rows


def ship(env_id: str, row: dict[str, Any]) -> Path | None:
    """Copy the configuration of ``row`` to ``agents/trained/<env>/low_energy/`` with its chip program and card.

    A runtime threshold scale is baked into the copy: its hidden neurons' thresholds are
    the scaled ones, so that its ``model.zip`` at scale 1 is the exact float twin of its
    program, and both act as the source agent at that scale. Runtime adaptation (a rule
    the host applies between inferences) has no such form: nothing is written for it.
    """
    if row["family"] == "adaptive":
        print(f"{env_id}: {row['variant']} is a runtime rule, not shipped")
        return None
    source = ROOT / Path(row["model"]).parent
    if not (source / "model.zip").exists():
        print(f"{env_id}: {row['variant']}: {source / 'model.zip'} is not here (train it first), not shipped")
        return None
    folder = trained_model_path(env_id).parent / "low_energy"
    if folder.exists():
        shutil.rmtree(folder)  # an earlier choice's files would not describe this one
    folder.mkdir(parents=True)
    scale = row["threshold_scale"]
    # With a baked scale only the weights carry over: the source's card and evaluations are of other thresholds.
    names = ("model.zip", "model_trained.zip", "eval.json", "README.md", "reward_curve.png", "command.txt", "run.json")
    for name in names if scale == 1.0 else ("model.zip",):
        if (source / name).exists():
            shutil.copy2(source / name, folder / name)
    model = DQN.load(folder / "model.zip", device="cpu")
    if scale != 1.0:
        with th.no_grad():
            for net in (model.policy.q_net, model.policy.q_net_target):
                for lif in net.q_net.lif:
                    lif.threshold.mul_(scale)
        model.save(folder / "model.zip")
    HardwarePolicy.from_model(model).program.save(folder / "chip_program.npz")
    baked = "" if scale == 1.0 else (
        f" It is `{row['model']}` with its hidden thresholds multiplied by {scale:g} (the runtime "
        f"`threshold_scale` {scale:g}, baked into `model.zip` and the program).")
    body = (
        f"## Low-energy configuration ({row['variant']}"
        + ("" if scale == 1.0 else f", threshold scale {scale:g}") + ")\n\n"
        f"Chosen by `python benchmarks/energy.py --ship` as the configuration with the fewest synaptic events "
        f"per inference that keeps at least {TARGETS[env_id][1]:.0%} of the shipped agent's normalised reward, "
        f"on the emulator over {row.get('episodes', 100)} held-out episodes (env seeds {EVAL_SEED} + i): reward "
        f"{row['mean_reward']:.2f} ({row['normalised_reward']:.0%}), {row['synaptic_events']:,.0f} synaptic events "
        f"and {row['hidden_spikes']:,.1f} hidden spikes per inference, estimated energy "
        f"{row['energy_time_j'] * 1e3:.2f} mJ (time part) + {row['energy_activity_j'] * 1e6:.1f} µJ (activity part), "
        f"latency {row['latency_s'] * 1e3:.0f} ms. `chip_program.npz` is its int8 program (lam=None: its QAT grid)."
        + baked
    )
    replace_card_section(folder / "README.md", "low-energy", body)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--no-train", action="store_true", help="evaluate cached models only (skip the others)")
    parser.add_argument("--only", nargs="*", default=None, help="evaluate only these variant names")
    parser.add_argument("--seeds", nargs="*", type=int, default=[],
                        help="also retrain the fixed threshold and ASPEN U(1,1.5), U(1,2) on these seeds (swept over "
                             "scales 1-2; the shipped agent's seed is the study's own rows)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train up to this many configurations at once (a recipe takes one core; evaluation runs beside)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-docs", action="store_true",
                        help="write the summary, table and plots into docs/energy.md between <!-- energy-table:begin/end -->")
    parser.add_argument("--ship", action="store_true",
                        help="copy each task's cheapest configuration meeting the target to agents/trained/<env>/low_energy/")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    references: dict[str, float] = {}
    skipped: list[str] = []
    todo = []
    for env_id in args.tasks:
        shipped = DQN.load(trained_model_path(env_id), device="cpu")
        references[env_id] = float_reward(shipped, env_id, args.episodes, seed=EVAL_SEED).mean_reward
        todo += [(env_id, v) for v in variants(env_id, args.seeds) if args.only is None or v.name in args.only]

    def trained(job: tuple[str, Variant]) -> Path | None:
        try:
            return train(*job, args.cache, allow=not args.no_train)
        except subprocess.CalledProcessError:
            return None  # its train.log says why; the others go on

    # Recipes train in subprocesses, up to --jobs at once; each is evaluated here as soon as it is ready.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(trained, job): job for job in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="configurations", unit="configuration"):
            (env_id, variant), path = futures[future], future.result()
            if path is None or not path.exists():
                reason = "not trained" if args.no_train else f"training failed: {args.cache / env_id / variant.slug}/train.log"
                skipped.append(f"{env_id}: {variant.name} ({reason})")
                continue
            try:
                rows.extend(evaluate(env_id, variant, path, args.episodes, references[env_id]))
            except Exception as error:  # keep what the other configurations measured
                traceback.print_exc()
                skipped.append(f"{env_id}: {variant.name} (evaluation failed: {error!r})")
    args.out.mkdir(parents=True, exist_ok=True)
    # Keep the figures of an earlier run for the points not evaluated now.
    rows, references = merge_with_previous(args.out / "energy.json", rows, references)
    rows = in_study_order(rows)
    data = {
        "rows": rows, "references_float_reward": references, "skipped": skipped, "episodes": args.episodes,
        "eval_seed": EVAL_SEED, "energy_model": energy.EnergyModel().__dict__,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "machine": machine_line(),
    }
    data["summary"] = summarise(rows)
    (args.out / "energy.json").write_text(json.dumps(data, indent=2) + "\n")
    docs_part = summary_markdown(data["summary"]) + "\n" + condensed_markdown(rows)
    table = docs_part + "\nAll points:\n\n" + markdown(rows, references)
    (args.out / "energy.md").write_text(table)
    if rows:
        plot(rows, args.out)
    if args.update_docs:  # after the plots, so that a first run links them too
        figures = figure_links(args.out, [("reward vs threshold scale", "energy_scale.png"),
                                          ("reward vs synaptic events", "energy_front.png"),
                                          ("ASPEN vs fixed per training seed", "energy_seeds.png")])
        update_page("energy.md", "energy-table", docs_part + "\n" + figures)
    print(table)
    if skipped:
        print("skipped:", *skipped, sep="\n  ")
    if args.ship:
        for env_id, summary in data["summary"].items():
            best = summary["cheapest_meeting_target"]
            folder = ship(env_id, best) if best is not None else None
            print(f"{env_id}: {'shipped ' + str(folder) if folder else 'nothing shipped'}")
    print(f"total wall time {data['wall_time_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
