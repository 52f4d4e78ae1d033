"""Faults at the Nth file step of ``spiking-dqn train`` (tests/test_train_kill.py).

A file step is a rename into the run folder: ``os.replace`` (every atomic write's last act)
or ``os.rename`` (moving an earlier run aside). :func:`install` counts them and, at the Nth,
kills the process (SIGKILL, before the rename: the temporary file is complete, the target
not yet replaced), raises :class:`Killed` (the same moment, in-process), or fails it with
ENOSPC (a full disk).

As a script: ``python tests/_train_faults.py FOLDER STEP KIND COUNT_FILE spiking-dqn-args...``
runs ``spiking-dqn`` with the fault installed, and writes the number of file steps it took
to ``COUNT_FILE`` when it exits normally.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: nothing of the package catches it."""


def install(folder: Path, step: int, kind: str) -> tuple[list[int], Callable[[], None]]:
    """Patch ``os.replace`` and ``os.rename`` to fault at the ``step``-th rename into ``folder`` (0: never).

    :param folder: the run folder (renames elsewhere are not counted)
    :param step: the file step that faults (1-based)
    :param kind: ``"kill"`` (SIGKILL), ``"raise"`` (:class:`Killed`) or ``"enospc"``
    :return: the step counter (one-element list) and a function that removes the patch
    """
    real = {"replace": os.replace, "rename": os.rename}
    count = [0]
    inside = str(Path(folder).resolve())

    def hooked(name: str) -> Callable[..., Any]:
        def call(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if str(Path(dst).resolve()).startswith(inside):
                count[0] += 1
                if count[0] == step:
                    if kind == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    if kind == "raise":
                        raise Killed(f"file step {step}")
                    raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return real[name](src, dst, *args, **kwargs)
        return call

    os.replace, os.rename = hooked("replace"), hooked("rename")

    def remove() -> None:
        os.replace, os.rename = real["replace"], real["rename"]

    return count, remove


def main() -> int:
    folder, step, kind, count_file, *args = sys.argv[1:]
    count, _ = install(Path(folder), int(step), kind)
    from spiking_dqn.cli import main as cli

    code = cli(args)
    Path(count_file).write_text(str(count[0]))
    return code


if __name__ == "__main__":
    sys.exit(main())
