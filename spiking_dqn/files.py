"""Atomic file writes: a file is either its previous complete version or its new complete one.

Every writer goes through :func:`atomic_write`: it writes to a temporary name in the target's
folder (``.<stem>.<random>.partial<suffix>``, the suffix kept so that writers that add one,
such as ``np.savez`` or SB3's ``save``, leave the name alone), flushes it to disk and renames
it over the target only when the writer returned. A writer that raises, or a process killed
while writing, leaves the target as it was (a killed process may leave a ``.partial`` file,
which nothing reads). Standard library only, so that every layer of the package may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PARTIAL_MARK", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

#: What the temporary names of :func:`atomic_write` contain (``.<stem>.<random>.partial<suffix>``).
PARTIAL_MARK = ".partial"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, flush it and rename it over ``path``.

    ``with atomic_write(out / "model.zip") as tmp: model.save(tmp)``. On an exception the
    temporary file is removed and ``path`` is left as it was.

    :param path: the file to write
    :raises FileNotFoundError: the writer returned without writing the temporary file
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{PARTIAL_MARK}{path.suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} (for {path})")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _sync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of a renamed file to disk, where the platform allows it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
