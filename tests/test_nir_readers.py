"""Other NIR readers on exported graphs (``benchmarks/nir_readers.py``), where the ``nir-readers`` extra is installed.

A program with synaptic delay 0 and reset to zero exports to a graph that Norse 1.1 runs
with the emulator's actions, and (with ``readout="lif"`` at snnTorch's ``dt = 1e-4``) one
that snnTorch 1.0 runs with them too; graphs with the one-tick delay (Delay nodes) are
refused, not run differently, and so is the IF readout by snnTorch (it takes ``r = 1`` only).
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from _benchmarks import benchmark_module

from spiking_dqn.hardware.program import ChipProgram

pytest.importorskip("nirtorch")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readers():
    """``benchmarks/nir_readers.py`` as a module."""
    with benchmark_module("nir_readers", "nir_readers") as module:
        yield module


@pytest.fixture(scope="module")
def programs():
    shipped = ChipProgram.load(ROOT / "agents" / "trained" / "CartPole-v0" / "chip_program.npz")
    obs = (np.random.default_rng(0).uniform(-1, 1, (300, 4)) * shipped.obs_bound).astype(np.float32)
    return shipped, dataclasses.replace(shipped, delay=0, reset="zero", v_reset=0.0), obs


@pytest.mark.parametrize("dt", [1e-3, 1e-4])
def test_norse_runs_a_delay_0_zero_reset_program_with_the_same_actions(readers, programs, dt):
    pytest.importorskip("norse")
    _, plain, obs = programs
    result = readers.measure(plain, obs, "Norse", dt)
    assert result["imports"] and result["action_agreement"] == 1.0, result


@pytest.mark.parametrize("reader", ["snnTorch", "Norse"])
def test_readers_refuse_the_delay_nodes_rather_than_run_another_network(readers, programs, reader):
    pytest.importorskip(readers.READERS[reader][0])
    shipped, _, obs = programs
    result = readers.measure(shipped, obs[:20], reader, 1e-3)
    assert not result["imports"], result


def test_snntorch_runs_a_delay_0_zero_reset_program_with_the_same_actions(readers, programs):
    pytest.importorskip("snntorch")
    _, plain, obs = programs
    assert readers.READERS["snnTorch"][2] == "lif"
    result = readers.measure(plain, obs, "snnTorch", 1e-4)
    assert result["imports"] and result["action_agreement"] == 1.0, result


def test_snntorch_refuses_the_if_readout(readers, programs):
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    from spiking_dqn.export import to_nir

    _, plain, _ = programs
    with pytest.raises(AssertionError, match="r != 1"):
        import_from_nir(to_nir(plain, dt=1e-4, readout="if"))
