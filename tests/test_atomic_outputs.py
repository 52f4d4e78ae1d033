"""Every file the package writes is written atomically (issue 27): through ``spiking_dqn.files.atomic_write``.

* a source check (``ast``): outside ``spiking_dqn/files.py`` no module writes a file directly
  (``.write_text``, ``.write_bytes``, ``open(..., "w")``, ``.savefig``, ``json.dump``); the only
  target allowed is the temporary path ``tmp`` of an enclosing ``with atomic_write(...) as tmp``
  (or a file object opened on it in the same ``with`` chain);
* a kill test: ``spiking-dqn deploy`` and ``spiking-dqn export`` killed (SIGKILL) at seeded random
  moments leave at their output path either the previous complete file or the new complete one.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.nir_read import read_nir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spiking_dqn"
AGENT = ROOT / "agents" / "trained" / "CartPole-v0"
SEED = 27
KILLS = 4  # kill points per command, drawn in (0, measured run time)

WRITING_METHODS = {"write_text", "write_bytes", "savefig"}


def _write_mode(call: ast.Call, mode_position: int, unknown: bool = True) -> bool:
    """Whether an ``open``-like call opens for writing (mode with w, a, x or +; an unknown mode: ``unknown``)."""
    mode = call.args[mode_position] if len(call.args) > mode_position else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return False
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return any(c in mode.value for c in "wax+")
    return unknown


def _target(call: ast.Call) -> tuple[str, ast.expr | None] | None:
    """``(what, written path or file)`` when ``call`` writes a file, else None."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open" and _write_mode(call, 1):
        return "open", call.args[0] if call.args else None
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr in WRITING_METHODS:
        return func.attr, func.value if func.attr != "savefig" else (call.args[0] if call.args else None)
    if func.attr == "open" and _write_mode(call, 0, unknown=False):  # Path.open("w"), not ZipFile.open(info)
        return "Path.open", func.value
    if func.attr == "dump" and isinstance(func.value, ast.Name) and func.value.id == "json":
        return "json.dump", call.args[1] if len(call.args) > 1 else None
    return None


def _is_atomic_write(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Call) and (
        (isinstance(expr.func, ast.Name) and expr.func.id == "atomic_write")
        or (isinstance(expr.func, ast.Attribute) and expr.func.attr == "atomic_write")
    )


class _DirectWrites(ast.NodeVisitor):
    """Collect the file writes whose target is not the temporary path of an enclosing ``atomic_write``."""

    def __init__(self) -> None:
        self.allowed: list[set[str]] = [set()]
        self.found: list[tuple[int, str]] = []

    def visit_With(self, node: ast.With) -> None:
        names: set[str] = set()
        for item in node.items:  # `with atomic_write(p) as tmp, open(tmp, "wb") as f:` allows tmp and f
            var = item.optional_vars
            if not isinstance(var, ast.Name):
                continue
            expr = item.context_expr
            opened = _target(expr) if isinstance(expr, ast.Call) else None
            if _is_atomic_write(expr) or (opened and self._ok(opened[1], names)):
                names.add(var.id)
        self.allowed.append(self.allowed[-1] | names)
        for item in node.items:
            self.visit(item.context_expr)
        for stmt in node.body:
            self.visit(stmt)
        self.allowed.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.allowed.append(set())  # a function's names are its own
        self.generic_visit(node)
        self.allowed.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def _ok(self, target: ast.expr | None, extra: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        return isinstance(target, ast.Name) and target.id in (self.allowed[-1] | extra)

    def visit_Call(self, node: ast.Call) -> None:
        found = _target(node)
        if found is not None and not self._ok(found[1]):
            self.found.append((node.lineno, found[0]))
        self.generic_visit(node)


def test_no_module_writes_a_file_directly():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "files.py":
            continue
        visitor = _DirectWrites()
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        offenders += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in visitor.found]
    assert not offenders, "write through spiking_dqn.files.atomic_write:\n" + "\n".join(offenders)


def test_the_source_check_sees_direct_writes():
    source = '''
def bad(p, fig, obj):
    p.write_text("x")
    open(p, "w")
    fig.savefig(p)
    json.dump(obj, open(p, "a"))
def good(p, fig):
    with atomic_write(p) as tmp:
        tmp.write_bytes(b"")
        fig.savefig(tmp, dpi=1)
    with atomic_write(p) as tmp, open(tmp, "wb") as f:
        json.dump({}, f)
    open(p).read()
def outside(fig):
    fig.savefig(tmp)
'''
    visitor = _DirectWrites()
    visitor.visit(ast.parse(source))
    assert [what for _, what in visitor.found] == ["write_text", "open", "savefig", "json.dump", "open", "savefig"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from spiking_dqn.cli import main; sys.exit(main())", *args]


def _kill_at(command: list[str], after: float) -> None:
    """Start ``command`` and SIGKILL it ``after`` seconds later (or let it finish first)."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("which", ["deploy", "export"])
def test_a_killed_command_leaves_the_previous_or_the_new_file(tmp_path, which):
    previous_program = AGENT / "w4" / "chip_program.npz"  # another complete program: tells old from new
    if which == "deploy":
        out = tmp_path / "p.npz"
        command = _cli("deploy", str(AGENT / "model.zip"), "--out", str(out), "--final-episodes", "0", "--no-progress")
        load = ChipProgram.load
        shutil.copyfile(previous_program, tmp_path / "previous.npz")
    else:
        out = tmp_path / "g.nir"
        command = _cli("export", str(AGENT / "chip_program.npz"), "--nir", str(out))
        load = read_nir
        subprocess.run(_cli("export", str(previous_program), "--nir", str(tmp_path / "previous.nir")),
                       cwd=ROOT, check=True, capture_output=True, timeout=300)
    previous_file = tmp_path / f"previous{out.suffix}"
    previous = load(previous_file)
    start = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    run_time = time.monotonic() - start
    new = load(out)
    assert new != previous
    rng = random.Random(f"{SEED}-{which}")
    for after in sorted(rng.uniform(0.05, 1.0) * run_time for _ in range(KILLS)):
        shutil.copyfile(previous_file, out)
        _kill_at(command, after)
        got = load(out)  # a partial file would not load, or load as another program
        assert got == previous or got == new, f"{which} killed after {after:.2f} s of {run_time:.2f} s"
        for leftover in tmp_path.glob(f".{out.stem}.*"):  # what a killed writer may leave: never read
            leftover.unlink()
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]
