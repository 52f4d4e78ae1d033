"""docs/robustness.md ("Faults and hostile files") states how many cases each fault and fuzz test runs: the tests' own counts.

Each row of the page's table names a test as ```tests/<file>.py::<function>``` followed by its
count of cases. The count is read from the test's source: its ``pytest.mark.parametrize``
cases times the cases of its first top-level loop over a literal count (``range(300)``,
``rng.integers(0, n, 150)``, a literal tuple), or, for the tests that draw their cases otherwise, from the
constants they use (:data:`COUNTED`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "robustness.md"
ROW = re.compile(r"`tests/(\w+\.py)::(\w+)`[^|]*\|\s*([\d,]+)\s*\|")


def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "tests" / name).read_text())


def _constant(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def _length(tree: ast.Module, node: ast.expr) -> int:
    if isinstance(node, (ast.List, ast.Tuple)):
        return len(node.elts)
    if isinstance(node, ast.Name):
        return len(_constant(tree, node.id))  # type: ignore[arg-type]
    raise ValueError(f"cannot count {ast.dump(node)}")


def _loop_cases(loop: ast.For) -> int | None:
    call = loop.iter
    if isinstance(call, (ast.Tuple, ast.List)):
        return len(call.elts)
    if not isinstance(call, ast.Call) or not call.args or not isinstance(call.args[-1], ast.Constant):
        return None
    if isinstance(call.func, ast.Name) and call.func.id == "range":
        return len(range(*[ast.literal_eval(a) for a in call.args]))
    return int(call.args[-1].value)


def cases(file: str, function: str) -> int:
    """Parametrized cases times the cases of the first top-level loop over a literal count."""
    if (file, function) in COUNTED:
        return COUNTED[(file, function)]()
    tree = _module(file)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    params = 1
    for decorator in func.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize":
            params *= _length(tree, decorator.args[1])
    loops = [c for c in (_loop_cases(n) for n in func.body if isinstance(n, ast.For)) if c is not None]
    return params * (loops[0] if loops else 1)


def _invocations() -> int:
    import tempfile

    from test_cli_bad_input import _invocations as invocations

    with tempfile.TemporaryDirectory() as tmp:
        return len(invocations(Path(tmp)))


def _constants(file: str, *names: str, times: int = 1) -> Callable[[], int]:
    return lambda: times * sum(int(_constant(_module(file), name)) for name in names)  # type: ignore[call-overload]


#: Tests whose cases are drawn from constants, not from a literal loop.
COUNTED: dict[tuple[str, str], Callable[[], int]] = {
    ("test_cli_bad_input.py", "test_bad_invocations_end_in_one_line_and_exit_2"): _invocations,
    ("test_atomic_outputs.py", "test_a_killed_command_leaves_the_previous_or_the_new_file"):
        _constants("test_atomic_outputs.py", "KILLS", times=2),
    ("test_train_kill.py", "test_a_run_killed_at_seeded_file_steps_leaves_one_run_or_is_refused"):
        _constants("test_train_kill.py", "FAST_KILL_STEPS"),
    ("test_train_kill.py", "test_a_full_disk_during_train_ends_in_one_line_and_exit_1"):
        _constants("test_train_kill.py", "FAST_FULL_DISK_STEPS"),
    ("test_train_kill.py", "test_train_sigkilled_at_seeded_steps_and_moments_leaves_one_run_or_is_refused"):
        _constants("test_train_kill.py", "SLOW_KILL_STEPS", "SLOW_KILL_TIMES"),
}


def _rows() -> list[tuple[str, str, int]]:
    return [(file, function, int(count.replace(",", ""))) for file, function, count in ROW.findall(PAGE.read_text())]


def test_the_page_lists_the_fault_and_fuzz_tests():
    rows = _rows()
    assert len(rows) >= 15
    for file, function, _ in rows:
        assert re.search(rf"^def {function}\(", (ROOT / "tests" / file).read_text(), re.M), f"{file}::{function}"


@pytest.mark.parametrize("file, function, stated", _rows() if PAGE.exists() else [])
def test_the_page_states_each_test_s_count_of_cases(file, function, stated):
    assert cases(file, function) == stated, f"docs/robustness.md: {file}::{function} runs {cases(file, function)}"


def test_the_page_states_the_total():
    total = sum(stated for _, _, stated in _rows())
    assert f"{total:,} cases" in PAGE.read_text()
