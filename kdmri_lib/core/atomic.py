"""Atomic file writes: write to a temporary file, then rename over the destination.

A reader never sees a half-written file, and an interruption (Ctrl-C, a crash, a full disk)
leaves the previous version intact. Temporary files are named ``.<name>.<random>.tmp``; they
live next to the destination unless ``tmp_dir`` (on the same file system) is given — e.g.
outside a data folder whose every file a loader will try to open.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from kdmri_lib.core.errors import ConfigError

#: the folder (inside an output folder) where a build in progress keeps its temporary files, never
#: inside a split folder that a dataset would list
PARTIAL_DIR = ".partial"


def read_json(path: str | os.PathLike) -> Optional[Any]:
    """The JSON document in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_manifest(path: str | os.PathLike) -> Optional[dict]:
    """A data set's ``manifest.json`` at ``path`` (None when missing, unreadable or not an object):
    the one reader of the demo data's and the real data sets' manifests."""
    m = read_json(path)
    return m if isinstance(m, dict) else None


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextmanager
def atomic_write(path: str | os.PathLike, tmp_dir: Optional[str | os.PathLike] = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (usual permissions).

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    d = Path(tmp_dir) if tmp_dir is not None else path.parent
    d.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=d)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes files owner-only
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike, names: Optional[list[str]] = None) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that a killed process left in ``folder``.

    :func:`atomic_write` removes its temporary file on any exception, but not after ``kill -9`` or a
    power cut. Call this when a process that owns ``folder`` starts (e.g. a training run on its
    ``out_dir``), never while another one may be writing there.

    Args:
        folder: the folder to clean (nothing happens if it does not exist).
        names: only temporaries of these destination names (e.g. ``["last.pt", "best.pt"]``);
            default: every ``.*.tmp`` file.

    Returns:
        the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [f".{n}.*.tmp" for n in names] if names else [".*.tmp"]
    removed = []
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed and return it.

    Raises:
        ConfigError: a file stands where the folder (or one of its parents) should be, or the
            folder cannot be created (permissions, read-only file system); the message names it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: the {what} is a file; expected a folder (choose another path)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        raise ConfigError(f"{path}: cannot create the {what}: {blocker or 'a parent'} is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the {what} ({e.strerror or e})") from None
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, default=str))
