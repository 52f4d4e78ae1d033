"""The manifest of a training folder (``run.json``): one run's files, written last, checked by every loader.

A training run writes its files one by one (``model_trained.zip``, ``evaluations.npz``,
``training.json``, ``model.zip``, ``eval.json``, ``reward_curve.png``, the card), each
atomically (:mod:`spiking_dqn.files`). What makes the folder one run is its manifest:

1. :func:`begin_run`, before anything else of the run is written or moved: the earlier run's
   manifest is copied to where its files are moved (``previous-<time>/``), then replaced in one
   rename by a manifest that says the run is not complete (its id and start time) and where the
   earlier run's files are going, until they are all there (:func:`moved_aside`; a run killed
   while moving them has the next run move the rest to the same folder, :func:`moving_to`);
2. :func:`finish_run`, last of all (after the model card): the manifest of the complete run,
   with its id, command, and the sha256 of every file it wrote (all files at the top of the
   folder but the model card, which later commands add sections to, and hidden temporary files);
3. :func:`check_run_folder`, by every reader of a training folder (``spiking-dqn deploy``,
   ``compare``, ``export``, ``calibrate``, ``search``: :mod:`spiking_dqn.cli.loading`):
   a folder whose run has not finished (still running, killed, failed) or one of whose files is not the one
   its manifest records (the folder mixes two runs, or a file was changed) is refused with
   one line naming it; a folder of a run written before manifests existed (an ``eval.json``
   and no ``run.json``) is accepted with a one-line warning.

A kill or a failed write at any point of a run therefore leaves a folder that loads as the
previous complete run (nothing of the new one written yet), that is refused as incomplete, or
that loads as the new complete run; never a mix.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from spiking_dqn.files import atomic_write_bytes, atomic_write_text

__all__ = ["MANIFEST_NAME", "RunFolderError", "begin_run", "check_run_folder", "finish_run", "moved_aside", "moving_to",
           "write_manifest"]

#: The manifest of a training folder.
MANIFEST_NAME = "run.json"
#: Version of the manifest's layout.
MANIFEST_FORMAT = 1
#: The record a folder of a run written before manifests holds (such a folder is accepted with a warning).
LEGACY_RECORD = "eval.json"
#: The files a manifest does not record: the model card (later commands add sections to it).
UNRECORDED = ("README.md",)


class RunFolderError(ValueError):
    """A training folder that does not hold one complete run: incomplete, damaged, or mixing runs."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


def sha256(path: Path) -> str:
    """The sha256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (None: it has none).

    :raises RunFolderError: a ``run.json`` that is not a manifest of this version
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFolderError(f"{path}: not a run manifest ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
            or not isinstance(manifest.get("complete"), bool) or not isinstance(files, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise RunFolderError(f"{path}: not a run manifest of this version")
    return manifest


def _read_quietly(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder)
    except RunFolderError:
        return None


def begin_run(out: Path, previous: Path | None = None, resume: bool = False) -> str:
    """Mark ``out`` as holding a run that has not finished, before the run writes or moves anything.

    With ``previous``, the earlier run's manifest is first copied there, and the new one says
    that the earlier run's files are being moved there (:func:`moving_to`) until
    :func:`moved_aside` says they all are.

    :param out: the training folder
    :param previous: the folder the earlier run's files move to
    :param resume: the run continues an interrupted one (its incomplete manifest, and run id, stay)
    :return: the run id
    """
    path = Path(out) / MANIFEST_NAME
    manifest = _read_quietly(out)
    if resume and manifest is not None and not manifest["complete"]:
        return str(manifest.get("run_id"))
    continued = previous is not None and manifest is not None and manifest.get("moving_to") == previous.name
    if previous is not None and path.is_file() and not continued:
        atomic_write_bytes(Path(previous) / MANIFEST_NAME, path.read_bytes())
    run_id = _new_run_id()
    moving = {"moving_to": previous.name} if previous is not None else {}
    _write(path, {"format": MANIFEST_FORMAT, "run_id": run_id, "complete": False, "started": _now(), "files": {},
                  **moving})
    return run_id


def moving_to(out: Path) -> Path | None:
    """The folder a move of an earlier run's files was interrupted in (None: no such move)."""
    manifest = _read_quietly(out)
    name = manifest.get("moving_to") if manifest is not None and not manifest["complete"] else None
    if not isinstance(name, str) or Path(name).name != name or not (Path(out) / name).is_dir():
        return None
    return Path(out) / name


def moved_aside(out: Path) -> None:
    """Say in the manifest of ``out`` that the earlier run's files are all moved (see :func:`begin_run`)."""
    manifest = _read_quietly(out)
    if manifest is not None and manifest.pop("moving_to", None) is not None:
        _write(Path(out) / MANIFEST_NAME, manifest)


def finish_run(out: Path, command: str) -> Path:
    """Write the manifest of the complete run in ``out``: last, when every other file of the run is written.

    It records every file at the top of ``out`` but the model card (:data:`UNRECORDED`) and
    hidden temporary files; the run id is the one :func:`begin_run` gave.

    :param out: the training folder
    :param command: the command line of the run
    :return: the manifest's path
    """
    out = Path(out)
    begun = _read_quietly(out) or {}
    names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name != MANIFEST_NAME and p.name not in UNRECORDED)
    return write_manifest(out, names, command, run_id=begun.get("run_id"), started=begun.get("started"))


def write_manifest(folder: Path, names: list[str], command: str, run_id: str | None = None,
                   started: str | None = None) -> Path:
    """Write the manifest of a complete run whose files are ``names`` in ``folder`` (their sha256 now).

    :param folder: the training folder
    :param names: the run's files
    :param command: the command line of the run
    :param run_id: the run's id (None: a new one)
    :param started: when the run started (None: unknown)
    :return: the manifest's path
    """
    folder = Path(folder)
    run_id = run_id or _new_run_id()
    manifest = {"format": MANIFEST_FORMAT, "run_id": run_id, "complete": True, "started": started,
                "finished": _now(), "command": command, "files": {name: sha256(folder / name) for name in names}}
    path = folder / MANIFEST_NAME
    _write(path, manifest)
    return path


def check_run_folder(folder: Path) -> str | None:
    """Check that ``folder`` holds one complete run (when it is a training folder).

    :param folder: the folder of a file to be loaded (a model, its ``eval.json``)
    :return: a one-line warning for a folder of a run written before manifests existed (an
        ``eval.json``, no ``run.json``); None otherwise
    :raises RunFolderError: the run has not finished (still running, killed or failed), or a file the
        manifest records is not the one it records (the folder mixes runs, or the file was
        changed): one line naming the folder or the file
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        if (folder / LEGACY_RECORD).is_file():
            return (f"{folder} has no {MANIFEST_NAME} (a training folder written before run manifests): "
                    "its files are not checked to be of one run")
        return None
    if not manifest["complete"]:
        raise RunFolderError(
            f"{folder} holds a training run that has not finished (run {manifest.get('run_id')} started "
            f"{manifest.get('started')}: still running, or killed or failed): wait for it, or run its command again "
            "(with --resume where it left a training checkpoint)")
    for name, digest in manifest["files"].items():
        path = folder / name
        if Path(name).name != name:
            raise RunFolderError(f"{folder / MANIFEST_NAME}: not a run manifest (file name {name!r})")
        if path.is_file() and sha256(path) != digest:
            raise RunFolderError(
                f"{path} is not the file of run {manifest.get('run_id')} ({folder / MANIFEST_NAME} records another "
                "sha256): the folder mixes runs, or the file was changed after the run")
    return None


def _write(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
