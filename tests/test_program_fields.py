"""Every field of ChipProgram counts: in equality, in the file, in the key of threshold-search studies.

The cases iterate ``dataclasses.fields(ChipProgram)``: a field added to the program without
a variant here fails :func:`test_every_field_has_a_variant` (give it one in ``VARIANTS``).
For each field, two programs that differ in that field only must compare unequal, survive
save/load, have different digests and so key different studies, and a search resumed on
the storage of the other program's search must search again.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.hardware.program_fields import fields_digest
from spiking_dqn.search import threshold_search

ENV = "CartPole-v1"  # 4 observation dimensions: 8 input neurons
TICKS = 4


def base_fields() -> dict:
    """A tiny valid program (8 inputs, 3 hidden neurons, 2 actions), every optional field at its default."""
    rng = np.random.default_rng(0)
    return dict(
        weights=[rng.integers(-3, 4, size=(3, 8)).astype(np.int8), rng.integers(-3, 4, size=(2, 3)).astype(np.int8)],
        thresholds=[np.full(3, 2.0, np.float32), np.full(2, 5000.0, np.float32)],
        alpha_decay=[np.full(3, 0.9, np.float32), np.ones(2, np.float32)],
        i_offset=[np.full(3, 0.25, np.float32), np.zeros(2, np.float32)],
        obs_bound=np.array([2.4, 3.0, 0.21, 3.0], dtype=np.float32),
        ticks=TICKS,
    )


def _first_entry(arrays: list[np.ndarray], value) -> list[np.ndarray]:
    """A copy of the list with entry [0].flat[0] set to ``value``."""
    out = [a.copy() for a in arrays]
    out[0].flat[0] = value
    return out


_BASE = base_fields()
_HYBRID = dict(encoding="hybrid")  # encoding_alpha may differ from 0 only in hybrid coding

#: field -> (what both programs share beyond the base, the second program's value of the field)
VARIANTS = {
    "weights": ({}, _first_entry(_BASE["weights"], 0 if _BASE["weights"][0].flat[0] else 1)),
    "thresholds": ({}, _first_entry(_BASE["thresholds"], 3.0)),
    "alpha_decay": ({}, _first_entry(_BASE["alpha_decay"], 0.5)),
    "i_offset": ({}, _first_entry(_BASE["i_offset"], -0.25)),
    "obs_bound": ({}, np.array([2.4, 3.0, 0.21, 2.0], dtype=np.float32)),
    "reset": ({}, "zero"),
    "v_reset": ({}, -0.5),
    "ticks": ({}, TICKS + 1),
    "delay": ({}, 0),
    "encoding": ({}, "poisson"),
    "seed": ({}, 1),
    "lambdas": ({}, [2.0, 1.0]),
    "centered_readout": ({}, True),
    "encoding_alpha": (_HYBRID, 0.25),
    "weight_bits": ({}, [4, 8]),
    "state_levels": ({}, [np.array([-1.0, 0.0, 1.0, 2.0], np.float32), None]),
    "tick_gain": ({}, [None, np.arange(1, TICKS + 1, dtype=np.float32)]),
    "model_digest": ({}, "ab" * 32),
}

FIELDS = [f.name for f in dataclasses.fields(ChipProgram)]


def pair(name: str) -> tuple[ChipProgram, ChipProgram]:
    """Two programs that differ in field ``name`` only."""
    if name not in VARIANTS:
        pytest.fail(f"ChipProgram.{name} has no variant in VARIANTS: give it one")
    shared, value = VARIANTS[name]
    a = ChipProgram(**{**base_fields(), **shared})
    b = dataclasses.replace(a, **{name: value})
    for other in FIELDS:  # b differs from a in field `name` only
        if other != name:
            assert fields_digest_of(a, other) == fields_digest_of(b, other), other
    return a, b


def fields_digest_of(program: ChipProgram, name: str) -> str:
    """The digest of one field's value (a program-like object holding just that field)."""
    holder = dataclasses.make_dataclass("Holder", [(name, object)])
    return fields_digest(holder(getattr(program, name)))


def test_every_field_has_a_variant():
    assert set(VARIANTS) == set(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_programs_differing_in_one_field_are_unequal_and_survive_save_load(name, tmp_path):
    a, b = pair(name)
    assert a != b and b != a
    loaded_a = ChipProgram.load(a.save(tmp_path / "a.npz"))
    loaded_b = ChipProgram.load(b.save(tmp_path / "b.npz"))
    assert loaded_a == a and loaded_b == b and loaded_a != loaded_b
    assert a.digest() != b.digest()
    assert loaded_a.digest() == a.digest() and loaded_b.digest() == b.digest()  # the key survives the file
    assert repr(loaded_a) == repr(a)


@pytest.mark.parametrize("name", FIELDS)
def test_a_search_on_the_other_programs_storage_searches_again(name):
    a, b = pair(name)
    storage = optuna.storages.InMemoryStorage()
    options = dict(stage1_grid=[1.0], stage2_factors=[1.0], n_episodes=1, storage=storage, study_name="t",
                   progress_bar=False)
    first = threshold_search(a, ENV, **options)
    again = threshold_search(b, ENV, **options)
    assert first.evaluated_here == 2 and again.evaluated_here == 2  # b was searched, not handed a's results
    assert set(first.study_names).isdisjoint(again.study_names)
    assert threshold_search(a, ENV, **options).evaluated_here == 0  # a's own search resumes


def test_a_file_without_a_model_digest_loads_with_none(tmp_path):
    """Files saved before programs recorded their model (no ``model_digest`` key) still load."""
    import json
    import zipfile

    program = dataclasses.replace(ChipProgram(**base_fields()), model_digest="cd" * 32)
    path = program.save(tmp_path / "new.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    metadata = json.loads(str(arrays["metadata"][()]))
    del metadata["model_digest"]
    arrays["metadata"] = np.array(json.dumps(metadata))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert zipfile.is_zipfile(old)
    loaded = ChipProgram.load(old)
    assert loaded.model_digest is None and loaded == dataclasses.replace(program, model_digest=None)


@pytest.mark.parametrize("bad", ["abc", "AB" * 32, 12, "g" * 64])
def test_a_model_digest_is_a_sha256_hex_digest(bad):
    with pytest.raises(ValueError, match="model_digest"):
        ChipProgram(**base_fields(), model_digest=bad)
