"""What other NIR readers do with an exported chip program: snnTorch 1.0 and Norse 1.1.

For the shipped CartPole program (synaptic delay 1, reset by subtraction) and the same
program with delay 0 and reset to zero (``dataclasses.replace``: the dynamics every reader
can express), exported by :func:`spiking_dqn.export.to_nir` at ``dt`` = 1 ms (the default)
and 0.1 ms (the step snnTorch's importer assumes), with the readout integrator as the node
each reader takes (``readout="lif"`` for snnTorch, ``"if"`` for Norse), each reader imports the graph and runs
the input spike trains of observations from CartPole episodes (the chip program's own
greedy play, env seeds 0..). The script reports, per reader, program and ``dt``: whether it
imports the graph (else its error), and the share of observations on which the action
(``argmax`` of the readout membrane after the last tick) is the emulator's, and the largest
readout voltage difference (NIR units of the readout, which are the chip's for the ``IF``
and the ``LIF`` readout; Norse ignores ``r``, snnTorch scales thresholds, not inputs).

Readers are optional (``pip install -e .[nir-readers]``; Norse 1.1 declares torchvision,
whose PyPI wheel does not load beside a CPU build of torch, but Norse's NIR import runs
without it); a reader that is not installed is reported as such.

Run: ``python benchmarks/nir_readers.py`` (writes ``benchmarks/results/nir_readers.json``
and ``.md``, and the table into docs/nir.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch as th

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_pages import update_page  # noqa: E402
from spiking_dqn.export import to_nir  # noqa: E402
from spiking_dqn.hardware.backend import encode_observations  # noqa: E402
from spiking_dqn.hardware.emulator import EmulatorBackend  # noqa: E402
from spiking_dqn.hardware.program import ChipProgram  # noqa: E402

PROGRAM = ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz"
RESULTS = ROOT / "benchmarks" / "results"
DTS = (1e-3, 1e-4)


def run_snntorch(graph: Any, spikes: np.ndarray, dt: float) -> np.ndarray:
    """snnTorch 1.0's ``import_from_nir``, stepped tick by tick; the readout ``Leaky``'s membrane after the last."""
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    net = import_from_nir(graph)
    neurons = [m for m in net.modules() if isinstance(m, snn.SpikingNeuron)]
    for m in neurons:
        m.reset_mem()
    with th.no_grad():
        for t in range(spikes.shape[0]):
            net(th.as_tensor(spikes[t]))
    return neurons[-1].mem.numpy()


def run_norse(graph: Any, spikes: np.ndarray, dt: float) -> np.ndarray:
    """Norse 1.1's ``from_nir(graph, dt=dt)``, stepped tick by tick; the last neuron node's membrane after the last."""
    from norse.torch import from_nir

    net = from_nir(graph, dt=dt)
    last = [name for name in graph.nodes if name.startswith(("if_", "lif_"))][-1]
    state = None
    with th.no_grad():
        for t in range(spikes.shape[0]):
            _, state = net(th.as_tensor(spikes[t]), state)
    readout = state.state[last]
    readout = readout[0] if isinstance(readout, tuple) else readout
    return readout.v.numpy()


#: reader: (package, runner, the ``readout`` of :func:`to_nir` it reads: snnTorch 1.0 takes an IF only with r = 1,
#: and then as a Leaky with beta 0.9, so it gets the integrator as a LIF whose decay is 1; Norse reads the IF)
READERS: dict[str, tuple[str, Callable[[Any, np.ndarray, float], np.ndarray], str]] = {
    "snnTorch": ("snntorch", run_snntorch, "lif"),
    "Norse": ("norse", run_norse, "if"),
}


def reader_version(package: str) -> str | None:
    """The installed version of a reader's package and of what it needs to read NIR (nirtorch), else ``None``."""
    try:
        importlib.metadata.version("nirtorch")
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def episode_observations(program: ChipProgram, n: int) -> np.ndarray:
    """``n`` observations of CartPole-v0 episodes played greedily by the program on the emulator (seeds 0, 1, ...)."""
    env, emulator, out, seed = gym.make("CartPole-v0"), EmulatorBackend(), [], 0
    while len(out) < n:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done and len(out) < n:
            out.append(obs)
            action = int(emulator.run(program, obs[None].astype(np.float32)).actions[0])
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        seed += 1
    return np.asarray(out, dtype=np.float32)


def measure(program: ChipProgram, obs: np.ndarray, reader: str, dt: float) -> dict[str, Any]:
    """One reader on one exported program: imported or its error, action agreement, largest readout difference."""
    spikes = np.asarray(encode_observations(program, obs), dtype=np.float32)
    chip = EmulatorBackend().run_spikes(program, spikes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # to_nir's reset warning: the reset is part of what is measured
        graph = to_nir(program, dt=dt, readout=READERS[reader][2])
    try:
        voltages = READERS[reader][1](graph, spikes, dt)
    except Exception as exc:  # the reader refuses the graph: its reason is the result
        return {"imports": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {
        "imports": True,
        "action_agreement": float(np.mean(voltages.argmax(axis=1) == chip.actions)),
        "max_readout_difference": float(np.abs(voltages - chip.voltages).max()),
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as the table docs/nir.md quotes."""
    lines = [
        "| reader | program | readout | dt | imports | action agreement | largest readout difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        head = f"| {row['reader']} {row.get('version') or ''} | {row['program']} | {row['readout']} | {row['dt']:g} s |"
        if row.get("version") is None:
            lines.append(f"{head} not installed | | |")
        elif not row["imports"]:
            error = row["error"].replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")
            lines.append(f"{head} no: {error} | | |")
        else:
            lines.append(f"{head} yes | {row['action_agreement']:.1%} | {row['max_readout_difference']:.3g} |")
    return (f"Observations: {results['observations']} from CartPole-v0 episodes (the shipped program's greedy "
            "play, env seeds 0, 1, ...).\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Measure every installed reader; write the json and markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=2000, help="observations to run (default 2000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # Norse logs a warning per IF node with r != 1
    shipped = ChipProgram.load(PROGRAM)
    programs = {
        "shipped (delay 1, subtract reset)": shipped,
        "delay 0, reset to 0": dataclasses.replace(shipped, delay=0, reset="zero", v_reset=0.0),
    }
    obs = episode_observations(shipped, args.observations)
    rows = []
    for reader, (package, _, readout) in READERS.items():
        version = reader_version(package)
        for name, program in programs.items():
            for dt in DTS:
                row = {"reader": reader, "version": version, "program": name, "readout": readout, "dt": dt}
                if version is not None:
                    row.update(measure(program, obs, reader, dt))
                rows.append(row)
                print(row, flush=True)
    results = {"observations": len(obs), "torch": th.__version__, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nir_readers.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "nir_readers.md").write_text(markdown(results))
    if args.out == RESULTS:
        update_page("nir.md", "nir_readers", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
