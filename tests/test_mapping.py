"""Chip resource mapping: cores, synapse rows and memory of a program on one SpiNNaker2."""

import math
from pathlib import Path

import numpy as np
import pytest

from spiking_dqn.hardware.mapping import (
    INDEX_BITS,
    MAX_ATOMS_PER_CORE,
    PES_PER_CHIP,
    ChipCapacityError,
    map_program,
    require_fits_one_chip,
)
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_file import ChipProgramError

AGENTS = Path(__file__).resolve().parents[1] / "agents" / "trained"
SHIPPED = ["CartPole-v0", "Acrobot-v1"]


def wide_program(hidden: int, obs_dim: int = 2, n_actions: int = 2, weight_bits=None) -> ChipProgram:
    """A program with one hidden population of ``hidden`` neurons (all weights 1)."""
    sizes = [2 * obs_dim, hidden, n_actions]
    weights = [np.ones((sizes[k + 1], sizes[k]), dtype=np.int8) for k in range(2)]
    return ChipProgram(
        weights=weights,
        thresholds=[np.ones(hidden, np.float32), np.full(n_actions, 5000, np.float32)],
        alpha_decay=[np.full(hidden, 0.9, np.float32), np.ones(n_actions, np.float32)],
        i_offset=[np.zeros(hidden, np.float32), np.zeros(n_actions, np.float32)],
        obs_bound=np.ones(obs_dim, np.float32), weight_bits=weight_bits,
    )


def expected_population(w: np.ndarray, weight_bits: int) -> tuple[int, int, int, int]:
    """cores, rows, synapses and fullest-core bytes of a projection, counted neuron by neuron."""
    n_post, n_pre = w.shape
    cores = -(-n_post // MAX_ATOMS_PER_CORE)
    rows = synapses = max_bytes = 0
    for c in range(cores):
        core_bytes = 0
        for i in range(n_pre):
            targets = [j for j in range(c * MAX_ATOMS_PER_CORE, min(n_post, (c + 1) * MAX_ATOMS_PER_CORE))
                       if w[j, i] != 0]
            if targets:
                rows += 1
                synapses += len(targets)
                core_bytes += 4 * math.ceil(len(targets) * (weight_bits + INDEX_BITS) / 32)
        max_bytes = max(max_bytes, core_bytes)
    return cores, rows, synapses, max_bytes


@pytest.mark.parametrize("env_id", SHIPPED)
def test_shipped_programs_mapping(env_id):
    program = ChipProgram.load(AGENTS / env_id / "chip_program.npz")
    mapping = map_program(program)
    sizes = program.layer_sizes
    assert [p.neurons for p in mapping.populations] == sizes
    assert mapping.populations[0].cores == -(-sizes[0] // MAX_ATOMS_PER_CORE)
    for k, (pop, w) in enumerate(zip(mapping.populations[1:], program.weights)):
        figures = (pop.cores, pop.synapse_rows, pop.synapses, pop.max_core_bytes)
        assert figures == expected_population(w, program.weight_bits[k])
    assert mapping.populations[-1].synapses == int(np.count_nonzero(program.weights[-1]))
    assert mapping.cores == sum(-(-n // MAX_ATOMS_PER_CORE) for n in sizes)
    assert mapping.fits and require_fits_one_chip(program).cores == mapping.cores
    d = mapping.to_dict()
    assert d["cores"] == mapping.cores and d["fits"] is True and d["weight_bits"] == program.weight_bits
    text = str(mapping)
    assert f"{mapping.cores} of {PES_PER_CHIP} cores" in text and "fits one chip" in text
    assert all(p.name in text for p in mapping.populations)


def test_weight_width_changes_memory_not_cores():
    program = ChipProgram.load(AGENTS / "CartPole-v0" / "chip_program.npz")
    m8, m2 = map_program(program), map_program(program, weight_bits=2)
    assert m2.cores == m8.cores and m2.weight_bits == (2, 2, 2)
    assert m2.max_core_bytes < m8.max_core_bytes
    hidden = program.weights[1]
    assert m2.populations[2].max_core_bytes == expected_population(hidden, 2)[3]


def test_program_weight_bits_are_used():
    narrow = map_program(wide_program(300, weight_bits=[2, 5]))
    assert narrow.weight_bits == (2, 5)
    wide = map_program(wide_program(300))
    assert narrow.populations[1].max_core_bytes == expected_population(np.ones((300, 4)), 2)[3]
    assert narrow.populations[1].max_core_bytes < wide.populations[1].max_core_bytes
    assert "2/5-bit" in narrow.summary()


def test_population_split_across_cores():
    mapping = map_program(wide_program(MAX_ATOMS_PER_CORE + 1))
    assert [p.cores for p in mapping.populations] == [1, 2, 1]
    # each of the 4 input neurons has a row on both cores of the hidden population
    assert mapping.populations[1].synapse_rows == 8
    assert mapping.populations[1].synapses == 4 * (MAX_ATOMS_PER_CORE + 1)


def test_program_too_large_for_one_chip_is_refused():
    program = wide_program(PES_PER_CHIP * MAX_ATOMS_PER_CORE)  # 152 cores of hidden neurons alone
    mapping = map_program(program)
    needed = 1 + PES_PER_CHIP + 1
    assert mapping.cores == needed and not mapping.fits
    assert "does NOT fit" in str(mapping)
    with pytest.raises(ChipCapacityError, match=rf"needs {needed} cores but one SpiNNaker2 chip has {PES_PER_CHIP}"):
        require_fits_one_chip(program)
    assert issubclass(ChipCapacityError, ChipProgramError)


@pytest.mark.parametrize("bits", [1, 9, 8.0, True, "8"])
def test_bad_weight_bits(bits):
    with pytest.raises(ValueError, match="weight_bits"):
        map_program(wide_program(4), weight_bits=bits)


@pytest.mark.parametrize("bad", [None, "agents/trained/CartPole-v0/chip_program.npz", {"weights": []}])
def test_not_a_program(bad):
    with pytest.raises(ValueError, match="expects a ChipProgram"):
        map_program(bad)
