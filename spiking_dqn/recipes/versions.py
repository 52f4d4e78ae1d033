"""The package versions a training's numbers depend on, the requirements lock's hash, and the machine.

Recorded in ``training.json`` and ``eval.json`` (keys ``packages`` and ``machine``) and in the
model card; the benchmarks write them beside their figures.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import torch as th

__all__ = ["LOCK_FILE", "TRAINING_PACKAGES", "installed_versions", "machine_line", "versions_line"]

#: Installed packages whose versions a training's numbers depend on (recorded with each trained model).
TRAINING_PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "snntorch")
#: The lock of every runtime and development dependency (``make lock``), in a clone's root.
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def installed_versions(lock: Path = LOCK_FILE) -> dict[str, Any]:
    """The versions of :data:`TRAINING_PACKAGES` installed, and the lock's sha256 with whether they follow it.

    A recipe run is bit-reproducible with the same code and the same packages; a newer
    release of one of them can change the trained weights as much as another seed.

    :param lock: the requirements lock (``make lock``; absent from a non-editable install)
    :return: ``packages`` (name to version, ``None`` when not installed), ``lock`` (its file
        name), ``lock_sha256`` (``None`` without the file) and ``lock_differs``: the locked
        packages installed at another version, or missing (``name==locked (installed)``)
    """
    packages = {name: _version(name) for name in TRAINING_PACKAGES}
    if not lock.exists():
        return {"packages": packages, "lock": lock.name, "lock_sha256": None, "lock_differs": []}
    data = lock.read_bytes()
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", data.decode(), flags=re.MULTILINE)
    differs = [f"{name}=={pinned} ({_version(name) or 'missing'})" for name, pinned in pins if _version(name) != pinned]
    return {"packages": packages, "lock": lock.name, "lock_sha256": hashlib.sha256(data).hexdigest(),
            "lock_differs": differs}


def versions_line(versions: dict[str, Any] | None = None) -> str:
    """:func:`installed_versions` in one line, as model cards and training records write it."""
    versions = versions or installed_versions()
    packages = " ".join(f"{k}=={v}" if v else f"{k} not installed" for k, v in versions["packages"].items())
    if versions["lock_sha256"] is None:
        return f"{packages}; no {versions['lock']}"
    differs = versions["lock_differs"]
    follows = "all locked packages as pinned"
    if differs:
        follows = f"{len(differs)} locked packages differ: {', '.join(differs)}"
    return f"{packages}; {versions['lock']} sha256 {versions['lock_sha256']} ({follows})"


def _version(name: str) -> str | None:
    """The installed version of a distribution, ``None`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_line(threads: str | None = None) -> str:
    """The machine a run measures on, in one line: architecture, CPUs, torch threads and torch's vector kernels.

    The one description of a machine that training records and benchmark result files carry.
    The kernels (``torch.backends.cpu.get_cpu_capability()``, e.g. AVX2 or AVX512) decide the
    floating-point rounding: a retraining is bit for bit the same only on the same ones.

    :param threads: the torch threads, in words, where they are not this process's (e.g.
        ``"1 torch thread per process"`` for a study that runs its work in worker processes);
        default: this process's count
    """
    if threads is None:
        threads = f"{th.get_num_threads()} torch thread(s)"
    return f"{platform.machine()}, {os.cpu_count()} CPU(s), {threads}, {th.backends.cpu.get_cpu_capability()} kernels"
