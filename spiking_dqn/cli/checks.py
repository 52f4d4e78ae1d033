"""The checks every ``spiking-dqn`` command runs on its parsed options before any work (one home).

:func:`check_arguments` looks at the options by name, whatever the command: the output paths
(``--out``, ``--nir``, ``--tensorboard-log``, a SQLite ``--storage``), the environment id, the
seed, the ticks per inference and the hidden layer sizes (bounded by the chip program limits of
:mod:`spiking_dqn.hardware.program_fields`). A refusal is a :class:`CLIError` (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

import gymnasium as gym

from spiking_dqn.cli.arguments import CLIError
from spiking_dqn.hardware.program_fields import MAX_POPULATION_NEURONS, MAX_PROJECTION_WEIGHTS, MAX_TICKS

#: Output options that name a file, by command (every other output option names a folder).
OUTPUT_FILES = {"deploy": ("out",), "export": ("nir",)}
#: Output options that name a folder.
OUTPUT_FOLDERS = ("out", "tensorboard_log")
#: Seeds the commands derive from ``--seed`` reach ``seed + SEED_SPAN`` (held-out episodes from
#: ``seed + 100000``); NumPy's legacy seeding takes seeds below ``2**32``.
SEED_SPAN = 1_000_000
MAX_SEED = 2**32 - 1 - SEED_SPAN
#: Bytes of float32 state a training batch may hold over its ticks (the membranes and spikes of
#: every hidden neuron at every tick, kept for backpropagation): a larger run is refused.
MAX_TRAINING_STATE_BYTES = 16 * 2**30
#: Observations per training batch the estimate assumes when the command does not know it.
ESTIMATE_BATCH = 64


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad values of the options of any command before it does any work.

    :param args: the parsed command line (``args.command`` names the command)
    :raises CLIError: the first bad value, with the option's name
    """
    command = getattr(args, "command", None)
    for name in OUTPUT_FILES.get(command, ()):
        if getattr(args, name, None) is not None:
            check_output_path(getattr(args, name), f"--{name.replace('_', '-')}", folder=False)
    for name in OUTPUT_FOLDERS:
        if name not in OUTPUT_FILES.get(command, ()) and getattr(args, name, None) is not None:
            check_output_path(getattr(args, name), f"--{name.replace('_', '-')}", folder=True)
    storage = getattr(args, "storage", None)
    if storage is not None:
        _check_sqlite(storage)
    if getattr(args, "env", None) is not None:
        check_env_id(args.env)
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed)
    check_network_size(getattr(args, "ticks", None), getattr(args, "net_arch", None))


def check_output_path(path: str | os.PathLike, option: str, *, folder: bool) -> None:
    """Refuse an output path that cannot be written: a folder where a file goes (or the reverse), a path under
    a file (``/dev/null/x``), or under a folder this user cannot write.

    :param path: the output path
    :param option: the option's flag, for the message
    :param folder: the output is a folder (else a file)
    :raises CLIError: why the path cannot be written
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise CLIError(f"{option} {path}: not a folder (a file is there)")
        if not folder and path.is_dir():
            raise CLIError(f"{option} {path}: is a folder, not a file")
        if not folder and not path.is_file():
            raise CLIError(f"{option} {path}: not a regular file")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: no permission to write in {parent}")


def _check_sqlite(storage: str) -> None:
    """The file of a ``sqlite:///PATH`` or journal storage as an output file (other URLs are checked on connect)."""
    from spiking_dqn.search.storage import journal_path, parse_storage_url  # SQLAlchemy, for the search only
    from spiking_dqn.search import StorageUnavailableError

    try:
        journal = journal_path(storage)
        if journal is not None:
            check_output_path(journal, "--storage", folder=False)
            return
        url = parse_storage_url(storage)
    except StorageUnavailableError as exc:
        raise CLIError(f"--storage: {exc}") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        check_output_path(url.database, "--storage", folder=False)


def check_env_id(env_id: str) -> None:
    """Refuse an environment id Gymnasium does not know (``module:Id`` imports ``module`` first, as ``gym.make``).

    :param env_id: Gymnasium id
    :raises CLIError: an unknown id or module
    """
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (gym.error.Error, ImportError) as exc:
        raise CLIError(f"cannot make environment {env_id!r}: {exc}") from None


def check_seed(seed: Any) -> None:
    """Refuse a seed outside ``0..MAX_SEED``.

    :param seed: ``--seed``
    :raises CLIError: a negative or too large seed
    """
    if not 0 <= seed <= MAX_SEED:
        raise CLIError(f"--seed must be an integer 0..{MAX_SEED} (seeds up to seed + {SEED_SPAN} are derived from "
                       f"it, and NumPy takes seeds below 2^32), got {seed}")


def check_network_size(ticks: int | None, net_arch: list[int] | None) -> None:
    """Refuse ticks or hidden layers beyond what a chip program holds, or a training state beyond memory.

    :param ticks: ``--ticks`` (None: the env's)
    :param net_arch: ``--net-arch`` (None: the env's)
    :raises CLIError: ticks over ``MAX_TICKS``, a layer over ``MAX_POPULATION_NEURONS``, two adjacent layers
        over ``MAX_PROJECTION_WEIGHTS`` weights, or more than ``MAX_TRAINING_STATE_BYTES`` of training state
    """
    if ticks is not None and ticks > MAX_TICKS:
        raise CLIError(f"--ticks {ticks}: a chip program runs at most MAX_TICKS = {MAX_TICKS} ticks per inference")
    if net_arch is None:
        return
    if max(net_arch) > MAX_POPULATION_NEURONS:
        raise CLIError(f"--net-arch {','.join(map(str, net_arch))}: a population has at most MAX_POPULATION_NEURONS "
                       f"= {MAX_POPULATION_NEURONS} neurons (one SpiNNaker2 chip)")
    if any(a * b > MAX_PROJECTION_WEIGHTS for a, b in zip(net_arch, net_arch[1:])):
        raise CLIError(f"--net-arch {','.join(map(str, net_arch))}: a projection has at most "
                       f"MAX_PROJECTION_WEIGHTS = {MAX_PROJECTION_WEIGHTS} weights")
    state = 2 * 4 * ESTIMATE_BATCH * (ticks or 1) * sum(net_arch)
    if ticks is not None and state > MAX_TRAINING_STATE_BYTES:
        raise CLIError(f"--ticks {ticks} with --net-arch {','.join(map(str, net_arch))}: a training batch of "
                       f"{ESTIMATE_BATCH} would keep about {state / 2**30:.0f} GiB of membrane state and spikes "
                       f"(at most {MAX_TRAINING_STATE_BYTES // 2**30} GiB)")
