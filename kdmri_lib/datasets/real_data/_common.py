"""Shared plumbing of the real-data preparation: manifests, archive readers, links, CSV.

Nothing here knows about a particular data set. Archive members are only ever *matched* by
name; files are written under names the caller builds (never by a member's path), so a
hostile archive cannot write outside the output folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from kdmri_lib.core import atomic as _atomic
from kdmri_lib.core.atomic import PARTIAL_DIR
from kdmri_lib.core.errors import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")

#: manifest file of each preparation, in the output folder
MANIFESTS = {
    "demo": "manifest.json",
    "fastmri": "manifest_fastmri.json",
    "brain_tumor": "manifest_brain_tumor.json",
    "natural": "manifest_natural.json",
}
#: which preparations write which sub-folders (two that share one cannot share an output folder)
_WRITES = {
    "demo": {"singlecoil", "natural"},
    "fastmri": {"singlecoil"},
    "brain_tumor": {"singlecoil"},
    "natural": {"natural"},
}

Log = Callable[[str], None]


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def is_hidden(rel: str) -> bool:
    """macOS metadata (``__MACOSX/``, ``._x``) and dot-files: never data."""
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(rel).parts)


def safe_name(s: str) -> str:
    """A file-name-safe version of ``s`` (letters, digits, ``.-_``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._")
    return s or "unnamed"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(path: Path) -> dict:
    """Cheap identity of a source (no hashing of tens of GB): resolved path, size, mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --------------------------------------------------------------------------------------------
# Output folder, manifests, CSV
# --------------------------------------------------------------------------------------------

def check_out_dir(out: Path, kind: str) -> None:
    """Refuse an output folder that already holds another preparation writing the same folders."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out must be a folder; a file of that name exists")
    for other, name in MANIFESTS.items():
        if other != kind and (out / name).exists() and _WRITES[other] & _WRITES[kind]:
            label = {"demo": "the embedded demo data", "fastmri": "the fastMRI knee data",
                     "brain_tumor": "the brain-tumor data", "natural": "natural images"}[other]
            raise DataError(f"{out}: this folder already holds {label} ({name}); "
                            f"use another --out for this data set (each MRI data set needs its own folder)")


read_manifest = _atomic.read_manifest


def write_json(path: Path, data: Any) -> None:
    _atomic.write_json(path, data)


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    with _atomic.atomic_write(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)


def write_text(path: Path, text: Optional[str]) -> None:
    """Write ``text`` atomically, or remove ``path`` when ``text`` is None."""
    if text is None:
        if path.exists():
            path.unlink()
        return
    _atomic.write_text(path, text)


def partial_dir(out: Path) -> Path:
    d = out / PARTIAL_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def clean_partial(out: Path) -> None:
    """Remove temporary files an interrupted run left behind."""
    d = out / PARTIAL_DIR
    if d.is_dir():
        shutil.rmtree(d, ignore_errors=True)


def place(tmp: Path, dest: Path, chmod: bool = True) -> None:
    """Move a finished temporary file into place (atomic within one file system)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if chmod:
        os.chmod(tmp, 0o666 & ~_atomic._umask())   # mkstemp files are owner-only
    os.replace(tmp, dest)


def link_or_copy(src: Path, dest: Path, mode: str, tmp_dir: Path) -> str:
    """Make ``dest`` refer to ``src`` without copying where possible; returns what was done.

    ``mode``: ``"auto"`` (hard link, else symbolic link), ``"hardlink"``, ``"symlink"``
    (absolute target) or ``"copy"``.
    """
    tmp = tmp_dir / f"{dest.name}.{os.getpid()}.lnk"
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    done = None
    if mode in ("auto", "hardlink"):
        try:
            os.link(src, tmp)
            done = "hardlink"
        except OSError as e:
            if mode == "hardlink":
                raise DataError(f"{src}: cannot hard-link into {dest.parent} ({e}); the source and --out must be "
                                f"on the same file system, or use --link symlink / copy") from None
    if done is None and mode in ("auto", "symlink"):
        os.symlink(src.resolve(), tmp)
        done = "symlink"
    if done is None:
        shutil.copy2(src, tmp)
        done = "copy"
    place(tmp, dest, chmod=False)  # never change the mode of the user's (hard-linked) file
    return done


# --------------------------------------------------------------------------------------------
# Reading members of a folder, a zip or a tar archive (random access)
# --------------------------------------------------------------------------------------------

class SourceReader:
    """Regular files of a folder or an archive, by POSIX relative path.

    ``names()`` lists them (hidden / ``__MACOSX`` entries excluded); ``iter_read(names)``
    yields ``(name, bytes)`` in an order that reads the archive forwards once.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.kind = "dir" if self.path.is_dir() else "zip" if self.path.name.lower().endswith(".zip") else "tar"
        self._zip: Optional[zipfile.ZipFile] = None
        self._tar: Optional[tarfile.TarFile] = None
        self._members: dict = {}
        if not self.path.exists():
            raise DataError(f"{self.path}: not found")
        try:
            if self.kind == "zip":
                self._zip = zipfile.ZipFile(self.path)
                self._members = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}
            elif self.kind == "tar":
                if not is_archive(self.path):
                    raise DataError(f"{self.path}: not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")
                self._tar = tarfile.open(self.path, "r:*")
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
            else:
                self._members = {p.relative_to(self.path).as_posix(): p for p in sorted(self.path.rglob("*"))
                                 if p.is_file()}
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            self.close()
            raise DataError(f"{self.path}: cannot read the archive ({type(e).__name__}: {e}); "
                            f"it may be truncated (an interrupted download) or not a {self.kind} file") from None
        self._names = sorted(n for n in self._members if not is_hidden(n))

    def names(self) -> list[str]:
        return list(self._names)

    def iter_read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        names = list(names)
        if self.kind == "tar":
            names.sort(key=lambda n: self._members[n].offset_data)  # forwards through a compressed stream
        for n in names:
            yield n, self.read(n)

    def read(self, name: str) -> bytes:
        m = self._members[name]
        try:
            if self.kind == "dir":
                return Path(m).read_bytes()
            if self.kind == "zip":
                return self._zip.read(m)
            f = self._tar.extractfile(m)
            return f.read() if f is not None else b""
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise DataError(f"{self.path}: cannot read member {name} ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        for h in (self._zip, self._tar):
            if h is not None:
                h.close()

    def __enter__(self) -> "SourceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_luma(data: bytes, name: str):
    """Decode an image (PNG/JPEG/...) to grayscale float32 in [0, 1] (Y of YCbCr, BT.601)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from kdmri_lib.datasets.demo_natural import to_luma

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("L", "RGB", "I;16"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise DataError(f"{name}: unexpected image shape {arr.shape}")
    return to_luma(arr)


class ProgressReader(io.RawIOBase):
    """A read-only stream that advances a tqdm bar by the bytes read (for streamed archives)."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        if n:
            self.bar.update(n)
        return n
