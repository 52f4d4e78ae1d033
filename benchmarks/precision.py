"""Precision study: how far weights and membrane state can be narrowed before the shipped agents break.

For each shipped agent (``agents/trained/<env>/model.zip``), on the emulator, 100 held-out
episodes per point (env seeds from ``EVAL_SEED``), normalised as in the threshold
benchmark (``(R - R_worst) / (R_float - R_worst)``, the float agent on the same episodes):

* weights only: 8, 6, 5, 4, 3 and 2 (ternary) bits per weight, post-training quantization
  (``quantize_network`` at ``lam="auto"`` of that width) vs QAT (``quantization_aware_finetune``
  on that grid, online, keep-best on the check episodes);
* state only (8-bit weights): 16, 8, 6, 4, 3 and 2 bits of membrane state, post-training
  levels (``state_levels_for`` on the float agent's visited observations) vs SQUAT (the
  same levels, divided by each layer's lambda, in the training forward during QAT), for
  the uniform and the threshold-centred level schemes;
* both at 4 and 2 bits (QAT + SQUAT, both schemes), and ternary weights with TaWQ's
  per-tick gains (``with_tick_gains``, learned during the 2-bit QAT).

Per point: reward, normalised reward, action agreement with the float agent (on its
visited observations), synaptic events per inference, weight memory in bytes at the
program's widths, and the fine-tuning's wall time. Fine-tuned variants are cached in
``runs/precision/<env>/<slug>/`` (``model.zip`` and ``variant.json`` with the settings and
the command), so ``--no-train`` redoes the tables and plots from them in minutes.

    python benchmarks/precision.py                      # both tasks; results into benchmarks/results/
    python benchmarks/precision.py --tasks CartPole-v0 --no-train

Writes ``precision.json``, ``precision.md``, ``precision_weights.png`` and ``precision_state.png``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
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
from spiking_dqn.cli.hyperparams import qat_learning_rate  # noqa: E402
from spiking_dqn.hardware.emulator import EmulatorBackend  # noqa: E402
from spiking_dqn.qat import quantization_aware_finetune  # noqa: E402
from spiking_dqn.quantization import quantize_network, resolve_grid  # noqa: E402
from spiking_dqn.quantization.levels import state_levels_for  # noqa: E402
from spiking_dqn.quantization.snap import snap_model_to_grid  # noqa: E402
from spiking_dqn.rollouts import backend_reward, float_reward, q_network, record_observations  # noqa: E402
from spiking_dqn.tick_gain import with_tick_gains  # noqa: E402

TASKS = ("CartPole-v0", "Acrobot-v1")
WORST = {"CartPole-v0": 0.0, "Acrobot-v1": -500.0}
WEIGHT_BITS = (8, 6, 5, 4, 3, 2)
STATE_BITS = (16, 8, 6, 4, 3, 2)
SCHEMES = ("uniform", "threshold_centered")
#: Online QAT steps of every fine-tuned variant (``--qat-steps`` overrides).
QAT_STEPS = {"CartPole-v0": 5_000, "Acrobot-v1": 2_000}
CHECK_EPISODES = 10
EVAL_SEED = 30_000
OBS_SEED = 10_000
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "precision"


@dataclass(frozen=True)
class Variant:
    """One point of the study.

    :param family: ``weights``, ``state``, ``both`` or ``tawq``
    :param method: ``PTQ``, ``QAT``, ``SQUAT`` (QAT on the 8-bit grid with state levels) or ``QAT+SQUAT``
    :param weight_bits: bits per weight
    :param state_bits: bits of membrane state (``None``: float32)
    :param scheme: level scheme of the state levels
    :param tick_gain: learn per-tick gains (TaWQ) during the QAT
    """

    family: str
    method: str
    weight_bits: int = 8
    state_bits: int | None = None
    scheme: str = "uniform"
    tick_gain: bool = False

    @property
    def trained(self) -> bool:
        return self.method != "PTQ"

    @property
    def name(self) -> str:
        parts = [f"w{self.weight_bits}"]
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
    out = [Variant("weights", m, weight_bits=b) for b in WEIGHT_BITS for m in ("PTQ", "QAT")]
    out += [Variant("state", m, state_bits=b, scheme=s) for s in SCHEMES for b in STATE_BITS for m in ("PTQ", "SQUAT")]
    out += [Variant("both", "QAT+SQUAT", weight_bits=b, state_bits=b, scheme=s) for b in (4, 2) for s in SCHEMES]
    out.append(Variant("tawq", "QAT", weight_bits=2, tick_gain=True))
    return out


def chip_levels(model: DQN, grid: Any, bits: int, scheme: str, observations: np.ndarray) -> list[np.ndarray | None]:
    """State levels of the hidden populations in chip units, from the PTQ program's membranes on the observations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program, _ = quantize_network(q_network(model), grid)
    return state_levels_for(program, observations, bits, scheme=scheme)


def fine_tune(env_id: str, variant: Variant, observations: np.ndarray, steps: int, cache: Path) -> tuple[DQN, float]:
    """The variant's fine-tuned model and the seconds it took (cached in ``cache``)."""
    folder = cache / env_id / variant.slug
    settings = {**dataclasses.asdict(variant), "qat_steps": steps, "check_episodes": CHECK_EPISODES}
    record = folder / "variant.json"
    if (folder / "model.zip").exists() and record.exists():
        saved = json.loads(record.read_text())
        if saved["settings"] == settings:
            return DQN.load(folder / "model.zip", device="cpu"), saved["wall_time_s"]
    start = time.perf_counter()
    model = DQN.load(trained_model_path(env_id), device="cpu")
    if variant.tick_gain:
        model = with_tick_gains(model)
    net, target = model.policy.q_net.q_net, model.policy.q_net_target.q_net
    grid = resolve_grid(net, "auto", True, weight_bits=variant.weight_bits)
    if variant.state_bits is not None:
        levels = chip_levels(model, grid, variant.state_bits, variant.scheme, observations)
        float_levels = [lv / np.float32(lam) for lv, lam in zip(levels[: len(net.net_arch)], grid.lambdas)]
        net.set_state_levels(float_levels)
        target.set_state_levels(float_levels)
    report = quantization_aware_finetune(
        model, grid, steps, env_id=env_id, learning_rate=qat_learning_rate(env_id), check_episodes=CHECK_EPISODES,
        seed=0,
    )
    snap_model_to_grid(model, report.grid)
    wall = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    command = shlex.join(["python", "benchmarks/precision.py", "--tasks", env_id, "--qat-steps", str(steps)])
    record.write_text(json.dumps({"settings": settings, "wall_time_s": wall, "command": command}, indent=2) + "\n")
    return model, wall


def program_of(env_id: str, variant: Variant, model: DQN, observations: np.ndarray) -> Any:
    """The chip program of a variant: PTQ from the shipped agent, or the fine-tuned agent on its own grid."""
    net = q_network(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant.trained:
            return quantize_network(net, net.grid)[0]
        grid = resolve_grid(net, "auto", True, weight_bits=variant.weight_bits)
        program, _ = quantize_network(net, grid)
    if variant.state_bits is not None:
        program = dataclasses.replace(
            program, state_levels=chip_levels(model, grid, variant.state_bits, variant.scheme, observations)
        )
    return program


def evaluate(env_id: str, variant: Variant, model: DQN, observations: np.ndarray, float_actions: np.ndarray,
             episodes: int, reference: float, wall: float) -> dict[str, Any]:
    program = program_of(env_id, variant, model, observations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # output saturation is counted in the row
        result = backend_reward(program, env_id, episodes, seed=EVAL_SEED)
        actions = EmulatorBackend(warn_saturation=False).run(program, observations).actions
    return {
        "env_id": env_id, "variant": variant.name, **dataclasses.asdict(variant),
        "mean_reward": result.mean_reward, "std_reward": result.std_reward,
        "normalised_reward": (result.mean_reward - WORST[env_id]) / (reference - WORST[env_id]),
        "agreement": float(np.mean(actions == float_actions)),
        "synaptic_events": result.synaptic_events_per_inference,
        "weight_memory_bytes": int(sum(program.weight_memory)),
        "fine_tuning_s": round(wall, 1),
    }


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["env_id"] for r in rows))
    for family, key, filename in (("weights", "weight_bits", "precision_weights.png"),
                                  ("state", "state_bits", "precision_state.png")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
        for ax, env_id in zip(axes[0], tasks):
            task = [r for r in rows if r["env_id"] == env_id and r["family"] == family]
            lines = dict.fromkeys((r["method"], r["scheme"]) for r in task)
            for method, scheme in lines:
                pts = sorted((r[key], r["normalised_reward"]) for r in task if (r["method"], r["scheme"]) == (method, scheme))
                label = method if family == "weights" else f"{method}, {scheme.replace('_', '-')}"
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
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    references: dict[str, float] = {}
    skipped: list[str] = []
    for env_id in args.tasks:
        shipped = DQN.load(trained_model_path(env_id), device="cpu")
        references[env_id] = float_reward(shipped, env_id, args.episodes, seed=EVAL_SEED).mean_reward
        observations = record_observations(shipped, env_id, 512, seed=OBS_SEED)
        with th.no_grad():
            float_actions = shipped.policy.q_net(th.as_tensor(observations)).argmax(1).numpy()
        steps = args.qat_steps or QAT_STEPS[env_id]
        todo = [v for v in variants() if args.families is None or v.family in args.families]
        for variant in tqdm(todo, desc=env_id, unit="point"):
            model, wall = shipped, 0.0
            if variant.trained:
                folder = args.cache / env_id / variant.slug
                if args.no_train and not (folder / "model.zip").exists():
                    skipped.append(f"{env_id}: {variant.name}")
                    continue
                model, wall = fine_tune(env_id, variant, observations, steps, args.cache)
            rows.append(evaluate(env_id, variant, model, observations, float_actions, args.episodes,
                                 references[env_id], wall))
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "precision.json"
    if previous.exists():  # keep the other tasks' figures of an earlier run
        old = json.loads(previous.read_text())
        rows = [r for r in old.get("rows", []) if r["env_id"] not in args.tasks] + rows
        references = {**{k: v for k, v in old.get("references_float_reward", {}).items() if k not in args.tasks},
                      **references}
    data = {"rows": rows, "references_float_reward": references, "skipped": skipped, "episodes": args.episodes,
            "eval_seed": EVAL_SEED, "qat_steps": {e: args.qat_steps or QAT_STEPS[e] for e in args.tasks},
            "wall_time_s": round(time.perf_counter() - start, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {th.get_num_threads()}"}
    (args.out / "precision.json").write_text(json.dumps(data, indent=2) + "\n")
    table = markdown(rows, references)
    (args.out / "precision.md").write_text(table)
    if rows:
        plot(rows, args.out)
    print(table)
    if skipped:
        print("skipped (not cached):", *skipped, sep="\n  ")
    print(f"total wall time {data['wall_time_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
