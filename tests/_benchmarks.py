"""A script of ``benchmarks/`` imported as a module by its tests (test_energy_study, test_robustness_benchmark, ...)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def benchmark_module(script: str, name: str) -> Iterator[ModuleType]:
    """``benchmarks/<script>.py`` imported as module ``name``, with ``benchmarks/`` on the path for its own imports.

    The module is in ``sys.modules`` while in use (its dataclasses, and worker processes,
    look their module up there); both are undone on exit.

    :param script: the script's file name without ``.py``
    :param name: the module name to import it as
    """
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
        sys.path.remove(str(BENCHMARKS))
