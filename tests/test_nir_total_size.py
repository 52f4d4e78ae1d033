"""The NIR reader bounds the bytes of all a file's datasets together, from their headers, before reading any (issue 27)."""

from __future__ import annotations

import resource
from pathlib import Path

import h5py
import numpy as np
import pytest

from spiking_dqn.hardware.program_fields import MAX_PROJECTION_WEIGHTS
from spiking_dqn.nir_format import MAX_FILE_BYTES, NIRError, check_nir_file
from spiking_dqn.nir_read import read_nir

#: Arrays of the hostile file: each at the per-array limit, together over the total.
N_ARRAYS = MAX_FILE_BYTES // (MAX_PROJECTION_WEIGHTS * 8) + 1


def _many_arrays(path: Path, n: int) -> None:
    """A small file declaring ``n`` float64 arrays of MAX_PROJECTION_WEIGHTS values (chunks never written)."""
    with h5py.File(path, "w") as f:
        nodes = f.create_group("node").create_group("nodes")
        for k in range(n):
            node = nodes.create_group(f"affine_{k}")
            node.create_dataset("type", data=np.bytes_("Affine"))
            node.create_dataset("weight", shape=(MAX_PROJECTION_WEIGHTS,), dtype="f8", chunks=(2**16,),
                                compression="gzip")


def test_many_arrays_each_within_the_limit_are_refused_together_before_any_is_read(tmp_path):
    one = tmp_path / "one.nir"
    _many_arrays(one, 1)
    check_nir_file(one)  # one such array passes the header checks
    path = tmp_path / "many.nir"
    _many_arrays(path, N_ARRAYS)
    assert path.stat().st_size < 1_000_000  # tiny on disk
    assert N_ARRAYS * MAX_PROJECTION_WEIGHTS * 8 > MAX_FILE_BYTES
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(NIRError, match="MAX_FILE_BYTES") as caught:
        read_nir(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 64 * 1024, f"the peak memory grew by {grown} KiB"  # one array alone would be 128 MiB
