"""Atomic, checksummed file output shared by every stage.

Every writer in corpusmix goes through these helpers so that a killed run can
never leave a file under its final name that a later run (or a trainer) would
mistake for complete: data is written to a temporary name in the same
directory and renamed into place only after it is flushed to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

_HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so memory stays flat."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: Path, rows: int) -> dict:
    """What a stage records of a file it wrote: name, rows, sha256 (read back) and size."""
    path = Path(path)
    return {"name": path.name, "rows": rows, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _synced_temp(path: Path, data: bytes) -> str:
    """``data`` written and synced to a temporary file beside ``path`` (same file system, so it can
    be renamed or linked into place); the caller removes it if it does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename (readers see old or new, never half)."""
    path = Path(path)
    tmp = _synced_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: str | os.PathLike, data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist, atomically: written and synced
    under a temporary name, then hard-linked into place (the link fails if the name exists), so
    a reader never sees it half-written and of two racing writers exactly one wins.
    Returns False when ``path`` already existed (nothing written)."""
    path = Path(path)
    tmp = _synced_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def new_staging_dir(parent: str | os.PathLike) -> Path:
    """A fresh hidden directory next to the final outputs, for one stage run to fill."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".staging-{os.getpid()}-{uuid.uuid4().hex}"  # the pid says whether its writer lives
    staging.mkdir()
    return staging


def _digests(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): sha256_file(f) for f in sorted(root.rglob("*")) if f.is_file()}


def publish_dir(staging: Path, final: Path) -> bool:
    """Move a filled staging directory to its final, content-addressed name.

    The name is derived from the inputs, so an existing directory should hold
    the same bytes: then the staging copy is dropped. If it does not (a file
    was deleted or damaged since, or a library upgrade changed the encoding),
    it is replaced, so a rebuild repairs what ``verify`` would flag.
    Returns True when this call published the directory.
    """
    for f in staging.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(staging)
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        if _digests(staging) == _digests(final):
            shutil.rmtree(staging, ignore_errors=True)
            return False
        old = final.with_name(f".replaced-{os.getpid()}-{uuid.uuid4().hex}")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(final.parent)
    return True


def discard_dir(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (ours or another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def collect_stale(root: Path) -> tuple[int, int]:
    """Remove the staging and replaced directories that killed runs left under ``root``: those
    whose writer (the pid in the name) is gone; a live run's are left alone. Returns (directories,
    bytes) removed. Names without a pid (written before pids were recorded) count as stale."""
    removed = size = 0
    if not root.is_dir():
        return 0, 0
    for d in [*root.rglob(".staging-*"), *root.rglob(".replaced-*")]:
        if not d.is_dir():
            continue
        owner = d.name.split("-")[1]
        if owner.isdigit() and len(d.name.split("-")) == 3 and pid_alive(int(owner)):
            continue
        size += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed, size


@contextlib.contextmanager
def build_lock(root: Path, echo=print):
    """Serialise whole builds on one storage root: a second build waits for the first (an OS
    file lock, released even if the holder is killed), then finds its work current and skips it."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            echo(f"waiting for another build of {root} ({f.read().strip() or 'unknown holder'}) to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
