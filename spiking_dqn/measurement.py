"""Timing and power measurement of inferences, for the float versus chip comparison.

No power figure is ever assumed: :func:`measure_float_energy` measures only where the
device's power can be read (CUDA through ``torch.cuda.power_draw``) and otherwise says
"not measured".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

#: Single-observation calls timed for each latency figure.
LATENCY_CALLS = 200
#: Minimum duration of the loop over which the float device's power is sampled.
POWER_SAMPLE_S = 1.0


def resolve_device(device: str | th.device = "auto") -> th.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the device given.

    :param device: ``"auto"``, a device name (``"cpu"``, ``"cuda:0"``, ...) or a torch device
    :return: the torch device
    :raises ValueError: an unknown device name, or CUDA asked for where it is not available
    """
    if isinstance(device, str) and device == "auto":
        return th.device("cuda" if th.cuda.is_available() else "cpu")
    try:
        dev = th.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not th.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here (use 'cpu' or 'auto')")
    return dev


def _sync(device: th.device) -> None:
    """Wait for the CUDA device's work to finish (nothing on other devices)."""
    if device.type == "cuda":
        th.cuda.synchronize(device)


def time_calls(fn: Callable[[int], Any], n_calls: int, device: th.device | None = None, warmup: int = 5) -> np.ndarray:
    """Wall time of ``n_calls`` calls ``fn(i)``, each timed alone (synchronising CUDA).

    :param fn: the call, given the call index
    :param n_calls: number of timed calls
    :param device: synchronise this CUDA device around every call
    :param warmup: untimed calls first
    :return: seconds per call, ``(n_calls,)``
    """
    sync = device is not None and device.type == "cuda"
    for i in range(warmup):
        fn(i)
    if sync:
        _sync(device)
    times = np.empty(n_calls)
    for i in range(n_calls):
        start = time.perf_counter()
        fn(i)
        if sync:
            _sync(device)
        times[i] = time.perf_counter() - start
    return times


def measure_float_energy(fn: Callable[[int], Any], device: th.device) -> tuple[float | None, str]:
    """Energy per call of ``fn`` on ``device``, where the device's power can be read.

    Only CUDA devices whose power NVML reports (``torch.cuda.power_draw``, which needs the
    ``pynvml`` package) are measured: the calls run for at least ``POWER_SAMPLE_S`` while
    the board power is sampled, and the energy per call is the mean board power times the
    wall time per call (board power includes the idle power of the GPU). Any other device
    is "not measured": no power figure is assumed.

    :param fn: the call, given the call index
    :param device: the device ``fn`` runs on
    :return: ``(joules per call or None, how it was measured or why not)``
    """
    if device.type != "cuda":
        return None, (
            f"not measured: no power reading for the {device.type} device here "
            "(only CUDA power via NVML is read; no CPU/GPU power figure is assumed)"
        )
    try:
        th.cuda.power_draw(device)
    except Exception as exc:  # noqa: BLE001 (pynvml missing, NVML unsupported, ...)
        return None, f"not measured: the GPU's power could not be read ({type(exc).__name__}: {exc})"
    samples: list[float] = []
    calls = 0
    _sync(device)
    start = time.perf_counter()
    while time.perf_counter() - start < POWER_SAMPLE_S or len(samples) < 3:
        fn(calls)
        calls += 1
        if calls % 10 == 0:
            _sync(device)
            samples.append(th.cuda.power_draw(device) / 1e3)  # mW -> W
    _sync(device)
    elapsed = time.perf_counter() - start
    power = float(np.mean(samples))
    return power * elapsed / calls, (
        f"measured: mean GPU board power {power:.1f} W (NVML, {len(samples)} samples, idle power included) "
        f"x wall time per inference over {calls} single-observation calls"
    )
