"""Precision study: how far weights and membrane state can be narrowed before the shipped agents break.

For each shipped agent (``agents/trained/<env>/model.zip``), on the emulator, 100 held-out
episodes per point (env seeds from ``EVAL_SEED``), normalised as in the threshold
benchmark (``(R - R_worst) / (R_float - R_worst)``, the float agent on the same episodes):

* weights only: 8, 6, 5, 4, 3 and 2 (ternary) bits per weight, post-training quantization
  on the grid of ``lam="auto"`` (a percentile rule) and of ``lam="mse"`` (least reconstruction
  error) at that width, vs QAT on the ``"mse"`` grid (online, keep-best on the check episodes);
* state only (8-bit weights): 16, 8, 6, 4, 3 and 2 bits of membrane state, post-training
  levels (``state_levels_for`` on the float agent's visited observations) vs SQUAT (the
  same levels, divided by each layer's lambda, in the training forward during QAT), for
  the uniform and the threshold-centred level schemes;
* both at 4 and 2 bits (QAT + SQUAT, both schemes), and ternary weights with TaWQ's
  per-tick gains (``with_tick_gains``, learned during the 2-bit QAT).

Every point is one :func:`~spiking_dqn.pipeline.fit_to_chip` (``method="none"``: no threshold search).
Per point: reward, normalised reward, action agreement with the float agent (on its
visited observations), synaptic events per inference, weight memory in bytes at the
program's widths, and the fine-tuning's wall time. Fine-tuned variants are cached in
``runs/precision/<env>/<slug>/`` (``model.zip`` and ``variant.json`` with the settings and
the command) with ``chip_program.npz``, so ``--no-train`` redoes the tables and plots from them in minutes.

    python benchmarks/precision.py                      # both tasks; results into benchmarks/results/
    python benchmarks/precision.py --tasks CartPole-v0 --no-train

Writes ``precision.json``, ``precision.md``, ``precision_weights.png`` and ``precision_state.png``;
``--update-docs`` writes the plots and the table into ``docs/precision.md`` between
``<!-- precision-table:begin/end -->``; ``--ship`` copies the 4-bit and ternary QAT agents to ``agents/trained/<env>/{w4,ternary}/`` with cards.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.common import trained_model_path  # noqa: E402
from envs.rewards import worst_reward  # noqa: E402
from docs_pages import figure_links, update_page  # noqa: E402
from merge import merge_with_previous  # noqa: E402
from spiking_dqn.hardware.emulator import EmulatorBackend  # noqa: E402
from spiking_dqn.hardware.program import ChipProgram  # noqa: E402
from spiking_dqn.hardware_policy import HardwarePolicy  # noqa: E402
from spiking_dqn.pipeline import QATSettings, Seeds, StateSettings, fit_to_chip  # noqa: E402
from spiking_dqn.grid import Grid  # noqa: E402
from spiking_dqn.quantization.snap import snap_model_to_grid  # noqa: E402
from spiking_dqn.recipes.versions import machine_line  # noqa: E402
from spiking_dqn.rollouts import backend_reward, float_reward, record_observations  # noqa: E402
from spiking_dqn.tick_gain import with_tick_gains  # noqa: E402

TASKS = ("CartPole-v0", "Acrobot-v1")
WEIGHT_BITS = (8, 6, 5, 4, 3, 2)
STATE_BITS = (16, 8, 6, 4, 3, 2)
SCHEMES = ("uniform", "threshold_centered")
#: Online QAT steps of the fine-tuned variants, per task and family (``--qat-steps`` overrides):
#: the weight widths (and TaWQ) get more than the state levels.
QAT_STEPS = {"CartPole-v0": {"weights": 20_000, "tawq": 20_000, "state": 10_000, "both": 20_000},
             "Acrobot-v1": {"weights": 20_000, "tawq": 20_000, "state": 3_000, "both": 10_000}}
# (Acrobot's SQUAT steps are few: its state levels slow a gradient step several-fold, 16-bit ones ~10x.)
#: QAT learning rates (``None``: the training's final one). CartPole's 4-bit QAT reached 195 held-out at
#: 1e-4 and 199 at 3e-5; Acrobot's reached -89 at its training rate 6.3e-4, -101 at 1e-4 (50 episodes).
QAT_LEARNING_RATES = {"CartPole-v0": 3e-5, "Acrobot-v1": None}
CHECK_EPISODES = 10
#: Steps between the keep-best checks of a fine-tuning (each on ``CHECK_EPISODES`` episodes).
CHECK_FREQ = {"CartPole-v0": 1_000, "Acrobot-v1": 1_000}
EVAL_SEED = 30_000
#: Observations (visited by the float agent from ``OBS_SEED``) for the agreement and the state levels' ranges.
OBSERVATIONS = 512
OBS_SEED = 10_000
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "precision"


@dataclass(frozen=True)
class Variant:
    """One point of the study.

    :param family: ``weights``, ``state``, ``both`` or ``tawq``
    :param method: ``PTQ``, ``QAT``, ``SQUAT`` (QAT on the 8-bit grid with state levels) or ``QAT+SQUAT``
    :param lam: the lambda rule of the grid (``None``: the shipped agent's own, its int8 program)
    :param weight_bits: bits per weight
    :param state_bits: bits of membrane state (``None``: float32)
    :param scheme: level scheme of the state levels
    :param tick_gain: learn per-tick gains (TaWQ) during the QAT
    """

    family: str
    method: str
    lam: str | None = "mse"
    weight_bits: int = 8
    state_bits: int | None = None
    scheme: str = "uniform"
    tick_gain: bool = False

    @property
    def trained(self) -> bool:
        return self.method != "PTQ"

    @property
    def name(self) -> str:
        parts = [f"w{self.weight_bits}" + (f" {self.lam}" if self.method == "PTQ" and self.family == "weights" else "")]
        if self.state_bits is not None:
            parts.append(f"s{self.state_bits} {self.scheme.replace('threshold_centered', 'centred')}")
        if self.tick_gain:
            parts.append("tick gains")
        return f"{' '.join(parts)} {self.method}"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in self.name)


def variants() -> list[Variant]:
    """Every point of the study, per task."""
    out = [Variant("weights", m, lam, weight_bits=b) for b in WEIGHT_BITS
           for m, lam in (("PTQ", "auto"), ("PTQ", "mse"), ("QAT", "mse"))]
    out += [Variant("state", m, None, state_bits=b, scheme=s) for s in SCHEMES for b in STATE_BITS
            for m in ("PTQ", "SQUAT")]
    out += [Variant("both", "QAT+SQUAT", weight_bits=b, state_bits=b, scheme=s) for b in (4, 2) for s in SCHEMES]
    out.append(Variant("tawq", "QAT", weight_bits=2, tick_gain=True))
    return out


def fit(env_id: str, variant: Variant, steps: int) -> tuple[Any, DQN]:
    """The variant's chip program and its float twin, through the one fit-to-chip pipeline.

    PTQ: the shipped agent quantized on the variant's grid, with state levels when asked.
    Fine-tuned variants: QAT (and SQUAT with state levels) from the shipped agent, keep-best
    on ``CHECK_EPISODES`` check episodes on the emulator.
    """
    model = DQN.load(trained_model_path(env_id), device="cpu")
    if variant.tick_gain:
        model = with_tick_gains(model)
    state = StateSettings(variant.state_bits, variant.scheme, observations=OBSERVATIONS)
    qat = QATSettings(steps if variant.trained else 0, mode="online", learning_rate=QAT_LEARNING_RATES[env_id],
                      check_episodes=CHECK_EPISODES, check_freq=CHECK_FREQ[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # readout saturation of coarse grids shows in the rows
        result = fit_to_chip(model, env_id, lam=variant.lam, weight_bits=variant.weight_bits, qat=qat, state=state,
                             method="none", eval_episodes=0, seeds=Seeds(calibration=OBS_SEED))
    return result.program, model


def cached_fit(env_id: str, variant: Variant, steps: int, cache: Path) -> tuple[Any, float]:
    """The program of a fine-tuned variant and the seconds its fine-tuning took (cached in ``cache``)."""
    folder = cache / env_id / variant.slug
    settings = {**dataclasses.asdict(variant), "qat_steps": steps, "check_episodes": CHECK_EPISODES,
                "check_freq": CHECK_FREQ[env_id], "learning_rate": QAT_LEARNING_RATES[env_id]}
    record = folder / "variant.json"
    if (folder / "chip_program.npz").exists() and record.exists():
        saved = json.loads(record.read_text())
        if saved["settings"] == settings:
            return ChipProgram.load(folder / "chip_program.npz"), saved["wall_time_s"]
    start = time.perf_counter()
    program, model = fit(env_id, variant, steps)
    wall = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program.save(folder / "chip_program.npz")
    command = shlex.join(["python", "benchmarks/precision.py", "--tasks", env_id, "--families", variant.family])
    record.write_text(json.dumps({"settings": settings, "wall_time_s": wall, "command": command}, indent=2) + "\n")
    return program, wall


def evaluate(env_id: str, variant: Variant, program: Any, observations: np.ndarray, float_actions: np.ndarray,
             episodes: int, reference: float, wall: float) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # output saturation is counted in the row
        result = backend_reward(program, env_id, episodes, seed=EVAL_SEED)
        actions = EmulatorBackend(warn_saturation=False).run(program, observations).actions
    return {
        "env_id": env_id, "variant": variant.name, **dataclasses.asdict(variant),
        "mean_reward": result.mean_reward, "std_reward": result.std_reward,
        "normalised_reward": (result.mean_reward - worst_reward(env_id)) / (reference - worst_reward(env_id)),
        "agreement": float(np.mean(actions == float_actions)),
        "synaptic_events": result.synaptic_events_per_inference,
        "weight_memory_bytes": int(sum(program.weight_memory)),
        "fine_tuning_s": round(wall, 1),
    }


#: The shipped low-precision agents: folder under ``agents/trained/<env>/`` -> the study point it copies.
SHIPPED = {"w4": ("weights", "QAT", 4), "ternary": ("weights", "QAT", 2)}


def ship(env_id: str, rows: list[dict[str, Any]], cache: Path, reference: float) -> list[Path]:
    """Copy the 4-bit and the ternary QAT variants of a task to ``agents/trained/<env>/{w4,ternary}/`` with a card.

    Each folder gets ``chip_program.npz`` (the program the study evaluated), its float twin
    ``model.zip`` (snapped to the program's grid, or the shipped agent when QAT kept its
    weights) and ``README.md`` with the command, the widths, the reward and the memory.
    """
    written = []
    int8 = next(r for r in rows if r["env_id"] == env_id and r["variant"] == "w8 auto PTQ")
    for name, (family, method, bits) in SHIPPED.items():
        row = next((r for r in rows if r["env_id"] == env_id and (r["family"], r["method"], r["weight_bits"])
                    == (family, method, bits)), None)
        source = cache / env_id / Variant(family, method, weight_bits=bits).slug
        if row is None or not (source / "chip_program.npz").exists():
            print(f"{env_id}: {name} not shipped (no cached variant in {source})")
            continue
        folder = trained_model_path(env_id).parent / name
        folder.mkdir(parents=True, exist_ok=True)
        for file in ("chip_program.npz", "variant.json"):
            shutil.copy2(source / file, folder / file)
        program = ChipProgram.load(folder / "chip_program.npz")
        # The float twin: snapped to the program's grid (a no-op after QAT kept its weights; the
        # shipped agent snapped, when the checks kept the weights before QAT).
        model = DQN.load(source / "model.zip", device="cpu")
        snap_model_to_grid(model, Grid.of_program(program))
        model.save(folder / "model.zip")
        if HardwarePolicy.from_model(model).program != program:
            raise RuntimeError(f"{folder}: model.zip does not quantize to chip_program.npz")
        record = json.loads((source / "variant.json").read_text())
        settings = record["settings"]
        memory = int(sum(program.weight_memory))
        body = (
            f"# {env_id}: {bits}-bit weights{' (ternary)' if bits == 2 else ''}\n\n"
            f"Derived from the shipped float agent (`../model.zip`) by `python benchmarks/precision.py --tasks "
            f"{env_id} --ship` (the study's point `{row['variant']}`): quantization-aware fine-tuning on the "
            f"`lam=\"{settings['lam']}\"` grid at {bits} bits per weight, {settings['qat_steps']:,} online steps, "
            f"keep-best on {settings['check_episodes']} check episodes on the emulator every "
            f"{settings['check_freq']:,} steps ({record['wall_time_s']:.0f} s on a 2-core machine shared with the "
            f"study's other fine-tunings); float32 "
            f"membrane state.\n\n"
            f"- weights: {program.weight_bits} bits per projection, lambdas "
            f"{', '.join(f'{lam:.4g}' for lam in program.lambdas)}; weight memory {memory:,} bytes "
            f"({memory / int8['weight_memory_bytes']:.1%} of the int8 program's {int8['weight_memory_bytes']:,})\n"
            f"- reward on the emulator over 100 held-out episodes (env seeds {EVAL_SEED} + i): "
            f"{row['mean_reward']:.2f} +- {row['std_reward']:.2f}, {row['normalised_reward']:.1%} of the float "
            f"agent's normalised reward ({reference:.2f} on the same episodes)\n"
            f"- action agreement with the float agent on {OBSERVATIONS} visited observations: {row['agreement']:.1%}; "
            f"{row['synaptic_events']:,.0f} synaptic events per inference\n\n"
            "`chip_program.npz` runs on the emulator (`HardwarePolicy(ChipProgram.load(...))`); `model.zip` is its "
            "float twin (`HardwarePolicy.from_model` quantizes it on its own grid).\n"
        )
        (folder / "README.md").write_text(body)
        written.append(folder)
    return written


def markdown(rows: list[dict[str, Any]], references: dict[str, float]) -> str:
    lines = []
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        lines += [f"**{env_id}** (float agent {references[env_id]:.1f} on the same episodes)", "",
                  "| configuration | reward | normalised | agreement | synaptic events | weight memory | fine-tuning |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["env_id"] == env_id):
            tuning = f"{r['fine_tuning_s']:.0f} s" if r["method"] != "PTQ" else "-"
            lines.append(f"| {r['variant']} | {r['mean_reward']:.1f} | {100 * r['normalised_reward']:.0f}% | "
                         f"{100 * r['agreement']:.1f}% | {r['synaptic_events']:,.0f} | {r['weight_memory_bytes']:,} B | {tuning} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    from spiking_dqn.plots import pyplot

    plt = pyplot()

    tasks = list(dict.fromkeys(r["env_id"] for r in rows))
    for family, key, filename in (("weights", "weight_bits", "precision_weights.png"),
                                  ("state", "state_bits", "precision_state.png")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
        for ax, env_id in zip(axes[0], tasks):
            task = [r for r in rows if r["env_id"] == env_id and r["family"] == family]
            lines = dict.fromkeys((r["method"], r["lam"], r["scheme"]) for r in task)
            for method, lam, scheme in lines:
                pts = sorted((r[key], r["normalised_reward"]) for r in task
                             if (r["method"], r["lam"], r["scheme"]) == (method, lam, scheme))
                label = f"{method}, lam={lam}" if family == "weights" else f"{method}, {scheme.replace('_', '-')}"
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
            if family == "weights":
                for r in rows:
                    if r["env_id"] == env_id and r["family"] == "tawq":
                        ax.scatter([2], [100 * r["normalised_reward"]], marker="*", s=140, zorder=3,
                                   label="ternary + tick gains (TaWQ)")
            ax.set_xlabel("bits per weight" if family == "weights" else "bits of membrane state")
            ax.set_ylabel("normalised reward on the emulator (%)")
            ax.set_title(env_id)
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--qat-steps", type=int, default=None, help="online QAT steps per variant (default per task)")
    parser.add_argument("--no-train", action="store_true", help="use cached fine-tuned variants only")
    parser.add_argument("--families", nargs="+", default=None, choices=("weights", "state", "both", "tawq"))
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--ship", action="store_true",
                        help="copy each task's 4-bit and ternary QAT variants to agents/trained/<env>/{w4,ternary}/")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the plots and the table into docs/precision.md between <!-- precision-table:begin/end -->")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    references: dict[str, float] = {}
    skipped: list[str] = []
    for env_id in args.tasks:
        shipped = DQN.load(trained_model_path(env_id), device="cpu")
        references[env_id] = float_reward(shipped, env_id, args.episodes, seed=EVAL_SEED).mean_reward
        observations = record_observations(shipped, env_id, OBSERVATIONS, seed=OBS_SEED)
        with th.no_grad():
            float_actions = shipped.policy.q_net(th.as_tensor(observations)).argmax(1).numpy()
        todo = [v for v in variants() if args.families is None or v.family in args.families]
        for variant in tqdm(todo, desc=env_id, unit="point"):
            steps = args.qat_steps or QAT_STEPS[env_id][variant.family]
            if variant.trained:
                folder = args.cache / env_id / variant.slug
                if args.no_train and not (folder / "chip_program.npz").exists():
                    skipped.append(f"{env_id}: {variant.name}")
                    continue
                program, wall = cached_fit(env_id, variant, steps, args.cache)
            else:
                program, wall = fit(env_id, variant, steps)[0], 0.0
            rows.append(evaluate(env_id, variant, program, observations, float_actions, args.episodes,
                                 references[env_id], wall))
    args.out.mkdir(parents=True, exist_ok=True)
    # Keep the figures of an earlier run for the points not evaluated now.
    rows, references = merge_with_previous(args.out / "precision.json", rows, references)
    data = {"rows": rows, "references_float_reward": references, "skipped": skipped, "episodes": args.episodes,
            "eval_seed": EVAL_SEED, "qat_steps": {e: args.qat_steps or QAT_STEPS[e] for e in args.tasks},
            "qat_learning_rates": {e: QAT_LEARNING_RATES[e] for e in args.tasks}, "check_freq": CHECK_FREQ,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "machine": machine_line()}
    (args.out / "precision.json").write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(rows, references)
    (args.out / "precision.md").write_text(table)
    if rows:
        plot(rows, args.out)
    if args.update_docs:  # after the plots, so that a first run links them too
        figures = figure_links(args.out, [("reward vs bits per weight", "precision_weights.png"),
                                          ("reward vs bits of membrane state", "precision_state.png")])
        update_page("precision.md", "precision-table", f"{figures}\nAll points (`benchmarks/results/precision.md`):\n\n{table}")
    print(table)
    if skipped:
        print("skipped (not cached):", *skipped, sep="\n  ")
    if args.ship:
        for env_id in args.tasks:
            for folder in ship(env_id, rows, args.cache, references[env_id]):
                print(f"{env_id}: shipped {folder}")
    print(f"total wall time {data['wall_time_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
