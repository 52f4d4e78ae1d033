"""Chip resource mapping: the cores and synapse memory a chip program needs on one SpiNNaker2.

:func:`map_program` places every population of a :class:`ChipProgram` on processing
elements (PEs, "cores") the way py-spinnaker2 splits populations at its default, and
counts the synapse rows and their memory on each core; :func:`require_fits_one_chip`
refuses a program that does not fit one chip, with the cores it needs.

Modelling assumptions (a model of the mapping, not a measurement on a chip):

* Every population, the input population (``2 * obs_dim`` spike sources) included, is
  split into ``ceil(n / MAX_ATOMS_PER_CORE)`` cores, and no two populations share a core
  (py-spinnaker2 places populations on separate PEs). The input spike sources occupy
  cores like any other population.
* A projection stores its synapses on the cores of its post-synaptic population. Each
  post core holds one synapse row per pre-synaptic neuron that has at least one nonzero
  weight to a neuron on that core; a zero weight is no synapse and takes no memory.
* A synapse entry takes ``weight_bits`` bits of weight plus ``INDEX_BITS`` bits of target
  neuron index (enough to address ``MAX_ATOMS_PER_CORE`` neurons); a row takes the bytes
  of its entries rounded up to whole 32-bit words (no row header is counted). The weight
  width is the program's ``weight_bits`` of that projection (8 unless it was narrowed);
  weights are stored as int8 in the file whatever their width.
* A program fits one chip when its cores are at most :data:`PES_PER_CHIP` and the synapse
  memory of every core is at most :data:`SRAM_BYTES_PER_PE` (the whole local SRAM, so the
  memory check is an upper bound: code, neuron state and buffers share that SRAM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_file import ChipProgramError
from spiking_dqn.semantics.checks import check_int

#: Neurons per core: py-spinnaker2's default ``max_atoms_per_core`` of a population (source:
#: py-spinnaker2's code as copied into the NIR paper repository and sPiNNIRker; DESIGN.md,
#: "What is known about SpiNNaker2").
MAX_ATOMS_PER_CORE = 250
#: Processing elements (ARM Cortex-M4F cores) of one SpiNNaker2 chip.
PES_PER_CHIP = 152
#: Local SRAM of one processing element (128 KiB on SpiNNaker2).
SRAM_BYTES_PER_PE = 128 * 1024
#: Bits of the target-neuron index in a synapse entry: ceil(log2(MAX_ATOMS_PER_CORE)).
INDEX_BITS = math.ceil(math.log2(MAX_ATOMS_PER_CORE))
_WORD_BYTES = 4


class ChipCapacityError(ChipProgramError):
    """A chip program that does not fit one SpiNNaker2 chip."""


@dataclass(frozen=True)
class PopulationMapping:
    """One population on the chip.

    :param name: ``"input"``, ``"hidden 1"``, ..., ``"output"``
    :param neurons: neurons of the population
    :param cores: cores it occupies
    :param synapse_rows: synapse rows stored on its cores (0 for the input)
    :param synapses: nonzero synapses stored on its cores
    :param max_core_bytes: synapse memory of its fullest core, in bytes
    """

    name: str
    neurons: int
    cores: int
    synapse_rows: int
    synapses: int
    max_core_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """The mapping of the population as plain data."""
        return {
            "name": self.name, "neurons": self.neurons, "cores": self.cores, "synapse_rows": self.synapse_rows,
            "synapses": self.synapses, "max_core_bytes": self.max_core_bytes,
        }


@dataclass(frozen=True)
class ChipMapping:
    """A chip program mapped onto one SpiNNaker2 chip.

    :param populations: every population, input first
    :param weight_bits: bits per stored weight, one per projection
    :param max_atoms_per_core: neurons per core used for the split
    :param pes_per_chip: cores of one chip
    :param sram_bytes_per_pe: synapse memory limit of one core
    """

    populations: tuple[PopulationMapping, ...]
    weight_bits: tuple[int, ...]
    max_atoms_per_core: int = MAX_ATOMS_PER_CORE
    pes_per_chip: int = PES_PER_CHIP
    sram_bytes_per_pe: int = SRAM_BYTES_PER_PE

    @property
    def cores(self) -> int:
        """Cores the program needs."""
        return sum(p.cores for p in self.populations)

    @property
    def max_core_bytes(self) -> int:
        """Synapse memory of the fullest core, in bytes."""
        return max(p.max_core_bytes for p in self.populations)

    @property
    def fits(self) -> bool:
        """True when the program fits one chip (cores and per-core synapse memory)."""
        return self.cores <= self.pes_per_chip and self.max_core_bytes <= self.sram_bytes_per_pe

    def to_dict(self) -> dict[str, Any]:
        """The mapping as plain data (for JSON reports)."""
        return {
            "populations": [p.to_dict() for p in self.populations], "cores": self.cores,
            "pes_per_chip": self.pes_per_chip, "max_atoms_per_core": self.max_atoms_per_core,
            "weight_bits": list(self.weight_bits), "max_core_bytes": self.max_core_bytes,
            "sram_bytes_per_pe": self.sram_bytes_per_pe, "fits": self.fits,
        }

    def summary(self) -> str:
        """One line: cores used of the chip's and whether it fits."""
        verdict = "fits one chip" if self.fits else "does NOT fit one chip"
        bits = sorted(set(self.weight_bits))
        width = f"{bits[0]}-bit" if len(bits) == 1 else "/".join(map(str, self.weight_bits)) + "-bit"
        return (
            f"{self.cores} of {self.pes_per_chip} cores ({self.max_atoms_per_core} neurons per core), "
            f"largest core synapse memory {self.max_core_bytes} B of {self.sram_bytes_per_pe} B "
            f"at {width} weights: {verdict}"
        )

    def __str__(self) -> str:
        header = ("population", "neurons", "cores", "synapse rows", "synapses", "max bytes/core")
        rows = [(p.name, str(p.neurons), str(p.cores), str(p.synapse_rows), str(p.synapses), str(p.max_core_bytes))
                for p in self.populations]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in [header, *rows]]
        return "\n".join([*lines, self.summary()])


def _row_bytes(entries: np.ndarray, weight_bits: int) -> np.ndarray:
    """Bytes of synapse rows with ``entries`` synapses each (whole 32-bit words)."""
    bits = entries.astype(np.int64) * (weight_bits + INDEX_BITS)
    return -(-bits // (8 * _WORD_BYTES)) * _WORD_BYTES


def map_program(program: ChipProgram, weight_bits: int | None = None) -> ChipMapping:
    """Map a chip program onto one SpiNNaker2 chip (see the module docstring's assumptions).

    :param program: the chip program
    :param weight_bits: bits per stored weight for every projection (default: the program's
        ``weight_bits``, one per projection)
    :return: the mapping
    :raises ValueError: not a chip program, or a weight width outside 2 .. 8
    """
    if not isinstance(program, ChipProgram):
        raise ValueError(f"map_program expects a ChipProgram, got {type(program).__name__}")
    if weight_bits is None:
        widths = [int(b) for b in program.weight_bits]
    else:
        widths = [check_int(weight_bits, "weight_bits", 2, 8)] * len(program.weights)
    sizes = program.layer_sizes
    names = ["input"] + [f"hidden {k}" for k in range(1, len(sizes) - 1)] + ["output"]
    populations = [PopulationMapping("input", sizes[0], math.ceil(sizes[0] / MAX_ATOMS_PER_CORE), 0, 0, 0)]
    for name, w, bits in zip(names[1:], program.weights, widths):
        n_post = w.shape[0]
        cores = math.ceil(n_post / MAX_ATOMS_PER_CORE)
        rows = synapses = max_bytes = 0
        for c in range(cores):
            block = w[c * MAX_ATOMS_PER_CORE:(c + 1) * MAX_ATOMS_PER_CORE] != 0  # (post on core, pre)
            entries = block.sum(axis=0)  # synapses of each pre neuron's row on this core
            rows += int(np.count_nonzero(entries))
            synapses += int(entries.sum())
            max_bytes = max(max_bytes, int(_row_bytes(entries, bits).sum()))
        populations.append(PopulationMapping(name, n_post, cores, rows, synapses, max_bytes))
    return ChipMapping(tuple(populations), tuple(widths))


def require_fits_one_chip(program: ChipProgram) -> ChipMapping:
    """The program's mapping, or an error when it does not fit one chip.

    :param program: the chip program
    :return: the mapping (it fits)
    :raises ChipCapacityError: more cores than one chip has, or a core's synapses beyond its SRAM
    """
    mapping = map_program(program)
    if not mapping.fits:
        per_pop = ", ".join(f"{p.name} {p.neurons} neurons -> {p.cores} cores" for p in mapping.populations)
        raise ChipCapacityError(
            f"the program needs {mapping.cores} cores but one SpiNNaker2 chip has {mapping.pes_per_chip} "
            f"(at {mapping.max_atoms_per_core} neurons per core: {per_pop}); largest core synapse memory "
            f"{mapping.max_core_bytes} B of {mapping.sram_bytes_per_pe} B available"
        )
    return mapping
