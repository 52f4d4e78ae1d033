"""Layering of the package: floors that import nothing above them, no cycle, and small units.

The rules:

* the chip-semantics floor (``spiking_dqn.semantics``) imports no other module of the
  package, and no third-party package but numpy and numba (no torch);
* the float model (:data:`FLOAT_MODEL` and every package module they reach) imports
  nothing of ``spiking_dqn.hardware`` or ``spiking_dqn.quantization``;
* the hardware layer imports only itself, the floor and the base module ``spiking_dqn.files``
  (atomic writes), which imports only the standard library and may be imported by every layer
  but the floor (which stays free of package modules);
* no import cycle between modules of the package;
* no module of :data:`SIZE_ROOTS` over :data:`MAX_MODULE_LINES` lines, and no function
  body over :data:`MAX_BODY_LINES` lines (from its first statement after the docstring to
  its end).

The static checks read every module of ``spiking_dqn/`` with :mod:`ast` and collect its
imports at any depth (module level, inside functions, and inside ``if TYPE_CHECKING:``
blocks too: an annotation is a dependency), plus ``importlib.import_module("...")`` calls
with a literal name. ``from spiking_dqn import Name`` counts as importing the module the
package root loads ``Name`` from (its ``_LAZY_IMPORTS`` table).
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

#: What the chip-semantics floor may import besides the standard library and itself.
FLOOR_THIRD_PARTY = {"numpy", "numba"}
#: What the hardware layer may import besides the standard library, itself and the floor
#: (py-spinnaker2 and Brian2 only lazily, inside the backends that need them).
HARDWARE_THIRD_PARTY = FLOOR_THIRD_PARTY | {"spinnaker2", "brian2"}
#: The float model: the spiking Q-network and its parts. They, and every module of the package
#: they import, stay below ``hardware/`` and ``quantization/``.
FLOAT_MODEL = tuple(f"{PACKAGE}.{name}" for name in ("network", "layers", "fused", "encoding", "tick_gain", "thresholds"))
#: Folders whose modules and functions are held to the size limits.
SIZE_ROOTS = ("spiking_dqn", "agents", "envs", "benchmarks")
#: The most lines a module may have.
MAX_MODULE_LINES = 450
#: The most lines a function body may have, from its first statement after the docstring to its end.
MAX_BODY_LINES = 80


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


def _tree_imports(tree: ast.Module, package_parts: list[str], modules, lazy: dict[str, str]) -> set[str]:
    """Every module ``tree`` imports, at any depth (``if TYPE_CHECKING:`` blocks included).

    :param package_parts: the package the module is in, for relative imports
    :param modules: the package's module names (``from a import b`` counts ``a.b`` when it is one)
    :param lazy: the package root's ``_LAZY_IMPORTS`` table
    """
    imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    imports.add(submodule)
                elif base == PACKAGE and alias.name in lazy:
                    imports.add(lazy[alias.name])
                else:
                    imports.add(base)
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
            imports.add(node.args[0].value)
    return imports


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
        info.imports = _tree_imports(tree, package_parts, modules, lazy)
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


#: Base modules: standard library only, importable from every layer but the floor.
BASE_MODULES = (f"{PACKAGE}.files",)


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
    assert any(_is_floor(m) for m in graph[f"{PACKAGE}.hardware.emulator"])
    assert f"{PACKAGE}.report" in graph[f"{PACKAGE}.compare"]  # `from spiking_dqn.report import ...`
    assert f"{PACKAGE}.plots" in graph[f"{PACKAGE}.report"]
    assert f"{PACKAGE}.semantics.encoding" in graph[f"{PACKAGE}.encoding"]
    # a cycle planted in a copy of the graph is found
    floor = f"{PACKAGE}.semantics.encoding"
    planted = {**graph, floor: graph[floor] | {f"{PACKAGE}.encoding"}}
    assert any(f"{PACKAGE}.encoding" in cycle for cycle in _cycles(planted))


def test_the_import_scan_counts_type_checking_and_function_level_imports():
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from spiking_dqn.report import ComparisonReport\n"
        "def f():\n    from . import plots\n"
    )
    found = _tree_imports(ast.parse(code), [PACKAGE], MODULES, {})
    assert {f"{PACKAGE}.report", f"{PACKAGE}.plots"} <= found


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


# ---------------------------------------------------------------------- (c) floors


def _third_party_or_outside(info: ModuleInfo, inside, third_party: set[str]) -> list[str]:
    """What ``info`` imports that is neither standard library, nor ``third_party``, nor a package
    module for which ``inside`` holds."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = set()
    for imported in info.imports:
        top = imported.split(".")[0]
        if top == PACKAGE:
            if not inside(imported):
                wrong.add(imported)
        elif top not in stdlib and top not in third_party:
            wrong.add(imported)
    return sorted(wrong)


def _reached(starts, stop=lambda name: False) -> set[str]:
    """The package modules ``starts`` import, directly or not, ``starts`` included; the imports
    of a module for which ``stop`` holds are not followed."""
    graph = _graph()
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if not stop(name):
                todo.extend(graph[name])
    return seen


def test_the_floor_imports_only_itself_numpy_and_numba():
    floor = [name for name in MODULES if _is_floor(name)]
    assert floor, "no module of the chip-semantics floor found"
    bad = {name: _third_party_or_outside(MODULES[name], _is_floor, FLOOR_THIRD_PARTY) for name in floor}
    assert {name: wrong for name, wrong in bad.items() if wrong} == {}


def test_the_floor_loads_no_torch_and_no_other_package_module():
    floor = sorted(name for name in MODULES if _is_floor(name))
    # Only what the package root itself loads (its lazy-import helper) may come along.
    code = f"""
import importlib, sys
import {PACKAGE}
before = set(sys.modules)
for name in {floor!r}:
    importlib.import_module(name)
loaded = sorted(m for m in set(sys.modules) - before if m == "torch" or m.startswith("torch.")
                or (m.startswith("{PACKAGE}.") and not m.startswith("{PACKAGE}.semantics")))
assert not loaded, loaded
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=300)


def test_the_float_model_reaches_nothing_of_hardware_or_quantization():
    def above(name: str) -> bool:
        return _is_hardware(name) or name == f"{PACKAGE}.quantization" or name.startswith(f"{PACKAGE}.quantization.")

    assert set(FLOAT_MODEL) <= set(MODULES)
    graph = _graph()
    bad = {}
    for name in sorted(m for m in _reached(FLOAT_MODEL, stop=above) if not above(m)):
        wrong = sorted(m for m in graph[name] if above(m))
        if wrong:
            bad[name] = wrong
    assert bad == {}


def test_base_modules_import_only_the_standard_library():
    assert set(BASE_MODULES) <= set(MODULES)
    bad = {name: _third_party_or_outside(MODULES[name], lambda m: False, set()) for name in BASE_MODULES}
    assert {name: wrong for name, wrong in bad.items() if wrong} == {}


def test_hardware_imports_only_itself_the_floor_and_base_modules():
    def inside(name: str) -> bool:
        return _is_hardware(name) or _is_floor(name) or name in BASE_MODULES

    bad = {
        name: _third_party_or_outside(info, inside, HARDWARE_THIRD_PARTY)
        for name, info in MODULES.items()
        if _is_hardware(name)
    }
    assert {name: wrong for name, wrong in bad.items() if wrong} == {}
    assert {m for m in _reached(n for n in MODULES if _is_hardware(n)) if not inside(m)} == set()


# ---------------------------------------------------------------------- (d) sizes


def _size_sources() -> list[Path]:
    return sorted(p for root in SIZE_ROOTS for p in (ROOT / root).rglob("*.py") if "__pycache__" not in p.parts)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, from its first statement after the docstring to its end."""
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def test_body_lines_start_after_the_docstring():
    tree = ast.parse('def f():\n    """doc\n\n    more"""\n    x = 1\n    return x\n')
    assert _body_lines(tree.body[0]) == 2


def test_no_module_over_the_line_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _size_sources()}
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_no_function_body_over_the_line_limit():
    long = {}
    for path in _size_sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_BODY_LINES:
                long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = _body_lines(node)
    assert not long, f"function bodies over {MAX_BODY_LINES} lines: {long}"
