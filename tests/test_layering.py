"""Layering of the package: the hardware layer needs no torch, and imports point one way.

The static checks read every module of ``spiking_dqn/`` with :mod:`ast` and collect its
imports at any depth (module level and inside functions; ``if TYPE_CHECKING:`` blocks,
which never run, are left out), plus ``importlib.import_module("...")`` calls with a
literal name. ``from spiking_dqn import Name`` counts as importing the module the package
root loads ``Name`` from (its ``_LAZY_IMPORTS`` table).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "spiking_dqn"

#: What the hardware layer may import besides the standard library and itself (py-spinnaker2
#: and Brian2 only lazily, inside the backends that need them).
HARDWARE_THIRD_PARTY = {"numpy", "numba", "spinnaker2", "brian2"}
#: Modules of the package, outside ``hardware/``, that the hardware layer may import.
HARDWARE_PACKAGE_DEPS = {PACKAGE}


@dataclass
class ModuleInfo:
    """One module of the package: its name, and the modules it imports."""

    name: str
    is_package: bool
    path: Path
    #: every imported module name, as written (absolute), third-party ones included
    imports: set[str] = field(default_factory=set)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST):
    """``ast.walk`` that skips the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def _lazy_imports(tree: ast.Module) -> dict[str, str]:
    """The package root's ``_LAZY_IMPORTS`` table (empty when it has none)."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "_LAZY_IMPORTS" for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def _collect() -> dict[str, ModuleInfo]:
    modules: dict[str, ModuleInfo] = {}
    trees: dict[str, ast.Module] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name, is_package = _module_name(path)
        modules[name] = ModuleInfo(name, is_package, path)
        trees[name] = ast.parse(path.read_text(), filename=str(path))
    lazy = _lazy_imports(trees[PACKAGE])
    for name, tree in trees.items():
        info = modules[name]
        package_parts = name.split(".") if info.is_package else name.split(".")[:-1]
        for node in _walk_runtime(tree):
            if isinstance(node, ast.Import):
                info.imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package_parts[: len(package_parts) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        info.imports.add(submodule)
                    elif base == PACKAGE and alias.name in lazy:
                        info.imports.add(lazy[alias.name])
                    else:
                        info.imports.add(base)
            elif (
                isinstance(node, ast.Call)
                and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
                )
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                info.imports.add(node.args[0].value)
    return modules


MODULES = _collect()


def _graph() -> dict[str, set[str]]:
    """Edges between modules of the package."""
    return {name: {m for m in info.imports if m in MODULES and m != name} for name, info in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _is_hardware(name: str) -> bool:
    return name == f"{PACKAGE}.hardware" or name.startswith(f"{PACKAGE}.hardware.")


def _is_floor(name: str) -> bool:
    """A module of the chip-semantics floor (``spiking_dqn.semantics``)."""
    return name == f"{PACKAGE}.semantics" or name.startswith(f"{PACKAGE}.semantics.")


# ---------------------------------------------------------------------- (a) at run time


def test_hardware_layer_runs_a_program_without_torch():
    code = """
import sys
import numpy as np
import spiking_dqn.hardware as hw
from spiking_dqn.hardware.backend import encode_observations
from spiking_dqn.semantics.encoding import as_observation_batch
from spiking_dqn.hardware.energy import estimate

rng = np.random.default_rng(0)
program = hw.ChipProgram(
    weights=[rng.integers(-20, 21, (6, 4)).astype(np.int8), rng.integers(-20, 21, (2, 6)).astype(np.int8)],
    thresholds=[np.full(6, 8.0, np.float32), np.full(2, 5000.0, np.float32)],
    alpha_decay=[np.ones(6, np.float32), np.ones(2, np.float32)],
    i_offset=[np.zeros(6, np.float32), np.zeros(2, np.float32)],
    obs_bound=np.ones(2, np.float32),
)
obs = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
result = hw.get_backend("emulator").run(program, obs)
assert result.voltages.shape == (5, 2) and result.actions.shape == (5,)
assert encode_observations(program, as_observation_batch(obs, 2)).shape == (program.ticks, 5, 4)
estimate(result, program)
hw.get_backend("spinnaker2", eth_ip="192.168.1.25")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=300)


def test_package_root_is_lazy():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    code = f"""
import sys
import spiking_dqn
assert spiking_dqn.__version__ == {version!r}, spiking_dqn.__version__
assert "torch" not in sys.modules
assert "spiking_dqn.hardware" not in sys.modules
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=300)


def test_package_root_names_resolve():
    import importlib

    import spiking_dqn

    lazy = _lazy_imports(ast.parse((ROOT / PACKAGE / "__init__.py").read_text()))
    assert set(spiking_dqn.__all__) == set(lazy) | {"__version__"}
    for name, module in lazy.items():
        # each public name is the object its defining module holds, not a copy or a stand-in
        assert getattr(spiking_dqn, name) is getattr(importlib.import_module(module), name), name
    assert set(spiking_dqn.__all__) <= set(dir(spiking_dqn))
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        spiking_dqn.missing  # noqa: B018


# ---------------------------------------------------------------------- (b) import graph


def test_the_import_scan_sees_known_edges():
    graph = _graph()
    assert f"{PACKAGE}.hardware.program" in graph[f"{PACKAGE}.hardware.backend"]
    assert f"{PACKAGE}.semantics.lif" in graph[f"{PACKAGE}.hardware.emulator"]
    assert f"{PACKAGE}.semantics.encoding" in graph[f"{PACKAGE}.encoding"]
    # a cycle planted in a copy of the graph is found
    floor = f"{PACKAGE}.semantics.encoding"
    planted = {**graph, floor: graph[floor] | {f"{PACKAGE}.encoding"}}
    assert any(f"{PACKAGE}.encoding" in cycle for cycle in _cycles(planted))


def test_no_import_cycle_in_the_package():
    assert _cycles(_graph()) == []


def test_no_module_of_the_package_imports_agents():
    # Module paths written as strings (a table of recipe modules for import_module) count too.
    recipe_path = re.compile(r"^agents(\.\w+)+$")
    offenders = {}
    for name, info in MODULES.items():
        found = {m for m in info.imports if m == "agents" or m.startswith("agents.")}
        tree = ast.parse(info.path.read_text())
        found |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and recipe_path.match(node.value)
        }
        if found:
            offenders[name] = sorted(found)
    assert offenders == {}


# ---------------------------------------------------------------------- (c) hardware side


def test_hardware_imports_nothing_of_the_torch_side():
    stdlib = set(sys.stdlib_module_names)
    bad = {}
    for name, info in MODULES.items():
        if not _is_hardware(name):
            continue
        wrong = set()
        for imported in info.imports:
            top = imported.split(".")[0]
            if top == PACKAGE:
                if not (_is_hardware(imported) or _is_floor(imported) or imported in HARDWARE_PACKAGE_DEPS):
                    wrong.add(imported)
            elif top not in stdlib and top not in HARDWARE_THIRD_PARTY and top != "__future__":
                wrong.add(imported)
        if wrong:
            bad[name] = sorted(wrong)
    assert bad == {}


def test_hardware_reaches_only_the_hardware_layer_and_kernels():
    graph = _graph()
    seen: set[str] = set()
    todo = [name for name in MODULES if _is_hardware(name)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    assert {m for m in seen if not (_is_hardware(m) or _is_floor(m))} <= HARDWARE_PACKAGE_DEPS
