"""Inference throughput of the chip emulator against the float torch model, on the CPU.

The CartPole network of Arfa et al. (4 observations -> 8 input neurons -> [64, 64] -> 2
actions, 10 ticks): the shipped agent ``agents/trained/CartPole-v0/model.zip`` when it
exists, otherwise a random network of that shape (the work per inference of both executors
does not depend on the weights: the emulator and the float model compute dense products
whatever spikes).

For batch 1 and batch 1024 it times

* the emulator: ``EmulatorBackend(threads=n).run(program, obs)`` end to end (validation,
  encoding, all populations, activity counts, argmax): a batch of at least
  ``2 x PER_THREAD`` observations runs on up to ``n = --threads`` threads at once (default:
  the CPUs this process may use; the kernels release the GIL), a smaller one on the
  calling thread;
* the same emulator on one thread (``threads=1``, the backend's default), the
  single-thread figure;
* the float model: ``SpikingQNetwork(obs).argmax(1)`` under ``torch.no_grad()`` on the CPU
  with ``torch.set_num_threads(1)`` (its compiled pass runs on one thread whatever torch's
  thread count);

and reports inferences per second (from the median time per call), the emulator / float
ratios, and how many times faster than the chip's real time (``ticks x 1 ms`` per inference,
one inference at a time) the emulator runs. Targets: >= 20,000 inferences/s at batch 1024
on one thread, and the emulator (on ``--threads`` threads, stated) no slower than the float
model at either batch. On a machine whose cores other work keeps busy, threads do not pay
(see :mod:`spiking_dqn.hardware.emulator`): compare the single-thread column there.

Run: ``python benchmarks/emulator_throughput.py`` (writes
``benchmarks/results/emulator_throughput.json``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy and torch load their BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.bounds import get_bounds  # noqa: E402
from spiking_dqn.hardware import EmulatorBackend  # noqa: E402
from spiking_dqn.hardware.emulator import available_cpus  # noqa: E402
from spiking_dqn.network import SpikingQNetwork  # noqa: E402
from spiking_dqn.quantization import quantize_network  # noqa: E402
from spiking_dqn.recipes.versions import machine_line  # noqa: E402

ENV_ID = "CartPole-v0"
SHIPPED = ROOT / "agents" / "trained" / ENV_ID / "model.zip"
TICK_S = 1e-3
TARGET_BATCH_1024_IPS = 20_000.0


def cartpole_network(ticks: int = 10) -> tuple[SpikingQNetwork, str]:
    """The shipped CartPole agent's weights in a network of ``ticks`` ticks, or a random one of its shape.

    The weights do not depend on the number of ticks, so the shipped agent's weights run
    with the reference configuration's 10 ticks by default (the agent itself uses 16).
    """
    th.manual_seed(0)
    net = SpikingQNetwork(get_bounds(ENV_ID), 2, net_arch=[64, 64], ticks=ticks)
    if SHIPPED.is_file():
        from stable_baselines3 import DQN

        shipped = DQN.load(SHIPPED, device="cpu").policy.q_net.q_net
        net.load_state_dict(shipped.state_dict())
        return net, f"shipped agent {SHIPPED.relative_to(ROOT)} (weights), {ticks} ticks"
    return net, f"random network (no {SHIPPED.relative_to(ROOT)} yet)"


def one_round(fn, min_time_s: float, min_calls: int = 3) -> float:
    """Seconds per call over one round of at least ``min_time_s`` and ``min_calls`` calls."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_time_s:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def time_interleaved(fns: dict, min_time_s: float, repeats: int) -> dict[str, dict[str, float]]:
    """Median and best seconds per call of each function, their rounds interleaved.

    Rounds alternate between the functions so that both see the same machine load (the
    machine may be shared); the best round is the least disturbed one.
    """
    for fn in fns.values():
        for _ in range(3):
            fn()
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rounds[name].append(one_round(fn, min_time_s))
    return {name: {"median_s": float(np.median(r)), "best_s": float(np.min(r))} for name, r in rounds.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=10, help="ticks per inference (reference: 10)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timing round")
    parser.add_argument("--repeats", type=int, default=7, help="timing rounds per figure")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help="threads of the emulator's large batches (default: the CPUs this process may use)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "emulator_throughput.json")
    return parser.parse_args(argv)


def measure(net: SpikingQNetwork, program, obs: np.ndarray, args: argparse.Namespace) -> dict:
    """One row: the emulator (``--threads`` and one thread) and the float model on the same observations, rounds interleaved."""
    batch = obs.shape[0]
    obs_t = th.as_tensor(obs)
    backend = EmulatorBackend(warn_saturation=False, threads=args.threads)
    single = EmulatorBackend(warn_saturation=False, threads=1)

    def float_call() -> th.Tensor:
        with th.no_grad():
            return net(obs_t).argmax(1)

    calls = {"emulator": lambda: backend.run(program, obs), "single": lambda: single.run(program, obs), "float": float_call}
    timed = time_interleaved(calls, args.min_time, args.repeats)
    emu, one, flt = timed["emulator"], timed["single"], timed["float"]
    emu_ips, one_ips, float_ips = batch / emu["median_s"], batch / one["median_s"], batch / flt["median_s"]
    return {
        "batch": batch,
        "emulator_threads": backend.parts(batch),
        "emulator_inferences_per_s": emu_ips,
        "emulator_inferences_per_s_best": batch / emu["best_s"],
        "emulator_1_thread_inferences_per_s": one_ips,
        "emulator_1_thread_inferences_per_s_best": batch / one["best_s"],
        "float_inferences_per_s": float_ips,
        "float_inferences_per_s_best": batch / flt["best_s"],
        "emulator_over_float": emu_ips / float_ips,
        "emulator_1_thread_over_float": one_ips / float_ips,
        "emulator_times_chip_real_time": emu_ips * program.ticks * TICK_S,
    }


def targets(by_batch: dict[int, dict], suffix: str = "") -> dict[str, bool]:
    """The targets, on the median rounds (``suffix=""``) or the best ones (``"_best"``)."""
    emulator, flt = f"emulator_inferences_per_s{suffix}", f"float_inferences_per_s{suffix}"
    return {
        "batch_1024_at_least_20000_per_s_on_1_thread": (
            by_batch[1024][f"emulator_1_thread_inferences_per_s{suffix}"] >= TARGET_BATCH_1024_IPS
        ),
        "no_slower_than_float_at_batch_1024": by_batch[1024][emulator] >= by_batch[1024][flt],
        "no_slower_than_float_at_batch_1": by_batch[1][emulator] >= by_batch[1][flt],
    }


def machine() -> dict:
    """Where the figures were measured."""
    return {
        "platform": platform.platform(),
        "machine": machine_line(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "torch": th.__version__,
    }


def report(result: dict) -> None:
    """Print the table and the targets."""
    print(f"network: {result['network']}; layer sizes {result['layer_sizes']}, {result['ticks']} ticks; "
          f"float model on one thread, emulator on up to {result['threads']} threads")
    header = (f"{'batch':>6} {'threads':>7} {'emulator inf/s':>15} {'1 thread':>10} {'float inf/s':>12} "
              f"{'emu/float':>10} {'1 thread/float':>15} {'x chip real time':>17}")
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        print(
            f"{row['batch']:>6} {row['emulator_threads']:>7} {row['emulator_inferences_per_s']:>15,.0f} "
            f"{row['emulator_1_thread_inferences_per_s']:>10,.0f} {row['float_inferences_per_s']:>12,.0f} "
            f"{row['emulator_over_float']:>10.2f} {row['emulator_1_thread_over_float']:>15.2f} "
            f"{row['emulator_times_chip_real_time']:>17,.1f}"
        )
    for name, ok in result["targets"].items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    print(f"load average (1 min) during the run: {result['machine']['load_average_1min']}")


def main(argv: list[str] | None = None) -> dict:
    """Time both executors at batch 1 and 1024, print the table and write the JSON."""
    args = parse_args(argv)
    th.set_num_threads(1)
    net, source = cartpole_network(args.ticks)
    net = net.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program, _ = quantize_network(net, "auto")
    bound = np.asarray(get_bounds(ENV_ID), dtype=np.float32)
    rng = np.random.default_rng(0)
    observations = [(rng.uniform(-1, 1, size=(batch, 4)) * bound).astype(np.float32) for batch in (1, 1024)]
    rows = [measure(net, program, obs, args) for obs in observations]
    by_batch = {row["batch"]: row for row in rows}
    result = {
        "network": source,
        "layer_sizes": program.layer_sizes,
        "ticks": program.ticks,
        "threads": args.threads,
        "chip_real_time_per_inference_s": program.ticks * TICK_S,
        "rows": rows,
        "targets": targets(by_batch),
        "targets_on_best_rounds": targets(by_batch, "_best"),
        "timing": (
            f"median (and best) of {args.repeats} rounds of >= {args.min_time} s each, the emulator's (on up to "
            f"{args.threads} threads and on one) and the float model's rounds interleaved; ratios and real-time "
            "factors from the medians; all figures measured"
        ),
        "machine": machine(),
    }
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
