"""How many threads torch runs the package's networks with, chosen once and stated.

The spiking Q-networks are small (tens to hundreds of neurons, batches of 32-64), so
torch's intra-op threads cost more in synchronisation than they save: on a 2-core
machine training with torch's default of one thread per core ran several times slower
than with one thread. The package therefore runs torch on one thread unless the user
chose a count:

- ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set in the environment: kept;
- ``torch.set_num_threads(n)`` called before the package's first model: kept when ``n``
  differs from torch's default (one thread per physical core), and any call after it is
  the user's to make;
- otherwise one thread, decided once per process and reported by :func:`torch_threads_choice`.
"""

from __future__ import annotations

import os

import torch as th

#: Environment variables that set torch's (and OpenMP's) thread count.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_choice: str | None = None


def physical_cores() -> int:
    """Physical cores this process may run on: torch's default intra-op thread count.

    Read from ``/proc/cpuinfo`` (distinct ``(physical id, core id)`` pairs among the CPUs
    of this process's affinity); where that is not available, the logical CPU count.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            blocks = f.read().split("\n\n")
    except OSError:
        return max(1, len(allowed))
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" in fields and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, len(cores) or len(allowed))


def choose_torch_threads() -> str:
    """Set torch to one thread unless the user chose a count; once per process.

    :return: what was decided, in words (also :func:`torch_threads_choice`)
    """
    global _choice
    if _choice is not None:
        return _choice
    current = th.get_num_threads()
    variables = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if os.environ.get(name)]
    if variables:
        _choice = f"torch threads: {current} (from {', '.join(variables)})"
    elif current != physical_cores():
        _choice = f"torch threads: {current} (set by the user with torch.set_num_threads)"
    else:
        th.set_num_threads(1)
        _choice = (
            "torch threads: 1 (chosen by spiking-dqn: small spiking networks train fastest on one thread; "
            "set OMP_NUM_THREADS or call torch.set_num_threads to choose another count)"
        )
    return _choice


def torch_threads_choice() -> str | None:
    """What :func:`choose_torch_threads` decided in this process (``None`` before it ran)."""
    return _choice
