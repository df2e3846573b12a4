"""Resumable, checksum-verified downloads (standard library only: ``urllib.request``).

:func:`download` streams ``url`` to ``dest.part``; a later call finds the ``.part`` file and asks
the server for the rest with an HTTP ``Range`` header (a server that ignores it and sends the
whole file again is handled by starting over). Connection drops are retried from where they
stopped. At the end the SHA-256 of the file is compared with the expected one: on a mismatch the
partial file is removed and a :class:`~kdmri_lib.core.errors.DataError` names the URL and both
hashes; otherwise ``dest.part`` is renamed to ``dest`` (atomic), so ``dest`` only ever exists
complete and verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from kdmri_lib.core.errors import ConfigError, DataError

CHUNK = 1 << 20
RETRY_DELAY_S = 1.0  # first pause before resuming a dropped connection (doubles each time)
USER_AGENT = "kdmri-data/0.1 (+https://github.com/kdmri/kdmri)"
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _check_sha(sha256: Optional[str]) -> Optional[str]:
    if sha256 is None:
        return None
    s = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise ConfigError(f"sha256 must be 64 hexadecimal digits; got {sha256!r}")
    return s


class _Interrupted(Exception):
    """The transfer stopped before the end; the .part file keeps what arrived."""

    def __init__(self, msg: str, state=(None, -1)):
        super().__init__(msg)
        self.state = state


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: Optional[str],
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, and verify it.

    Args:
        url: ``http://`` or ``https://`` URL.
        dest: destination file; ``dest`` + ``.part`` holds the download in progress.
        sha256: expected hex SHA-256, or None to skip the check (the caller must ask for that
            explicitly; the CLIs require ``--allow-unverified``).
        progress: show a byte progress bar.
        retries: how many times a dropped connection is resumed within this call.
        timeout: socket timeout in seconds.

    Returns:
        ``dest``. If ``dest`` already exists (and matches ``sha256``) nothing is downloaded.

    Raises:
        DataError: HTTP errors, a transfer that stays interrupted (the ``.part`` file is kept and
            the next call resumes it), or a checksum mismatch (the ``.part`` file is removed).
    """
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"url must start with http:// or https://; got {url!r}")
    expected = _check_sha(sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if expected is None:
            return dest
        actual = sha256_file(dest)
        if actual == expected:
            return dest
        raise DataError(f"{dest}: exists but its sha256 is {actual}, expected {expected} (from {url}); "
                        f"delete it to download again")

    hasher, hashed = None, -1
    attempt = 0
    while True:
        try:
            hasher, hashed = _fetch(url, part, hasher, hashed, progress, timeout)
            break
        except _Interrupted as e:
            hasher, hashed = e.state
            attempt += 1
            got = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DataError(f"download of {url} was interrupted after {got} bytes ({e}); the partial file "
                                f"{part} is kept: run the same command again to resume") from None
            log(f"download of {url} interrupted after {got} bytes ({e}); resuming ({attempt}/{retries})")
            time.sleep(min(RETRY_DELAY_S * 2.0 ** (attempt - 1), 30.0))
        except OSError as e:  # writing the .part file failed (disk full, permissions)
            raise DataError(f"download of {url}: cannot write {part} ({e})") from None

    actual = hasher.hexdigest() if hasher is not None and hashed == part.stat().st_size else sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink()
        raise DataError(f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
                        f"the downloaded file was removed ({part}). The file on the server differs from the one "
                        f"the checksum describes: check --url / --sha256")
    os.replace(part, dest)
    if expected is None:
        log(f"{dest.name}: sha256 {actual} (not verified: no expected checksum was given)")
    return dest


def _rehash(part: Path) -> tuple["hashlib._Hash", int]:
    h = hashlib.sha256()
    n = 0
    with open(part, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h, n


def _fetch(url: str, part: Path, hasher, hashed: int, progress: bool, timeout: float):
    """One HTTP request: append to (or restart) ``part``; returns the running hash state."""
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - scheme checked by the caller
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset > 0:
            # "range not satisfiable": the .part may already be complete
            total = _content_range_total(e.headers.get("Content-Range", ""))
            e.close()
            if total is not None and total == offset:
                return (hasher, hashed) if hashed == offset else _rehash(part)
            part.unlink()
            raise _Interrupted("server refused to resume; starting over") from None
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except _NETWORK_ERRORS as e:
        raise _Interrupted(f"{type(e).__name__}: {e}") from None
    except ValueError as e:
        raise DataError(f"download of {url} failed: {e}") from None

    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset > 0 and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                offset = 0  # inconsistent answer: start over
        elif offset > 0:
            offset = 0  # the server ignored Range and sends everything: start over
        if offset == 0:
            hasher, hashed = hashlib.sha256(), 0
        elif hashed != offset or hasher is None:
            hasher, hashed = _rehash(part)
        total = offset + length if length is not None else None
        mode = "ab" if offset > 0 else "wb"
        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=part.name[:-5][:40], disable=not progress, leave=False) as bar:
            while True:
                error = None
                try:
                    chunk = resp.read(CHUNK)
                except http.client.IncompleteRead as e:
                    chunk, error = e.partial or b"", e
                except (*_NETWORK_ERRORS, OSError) as e:  # connection reset / timeout while reading
                    chunk, error = b"", e
                if chunk:
                    f.write(chunk)  # a disk error here is not a network problem: it propagates
                    hasher.update(chunk)
                    hashed += len(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                if error is not None:
                    f.flush()
                    raise _Interrupted(f"{type(error).__name__}: {error}", (hasher, hashed)) from None
                if not chunk:
                    break
        if length is not None and received < length:
            raise _Interrupted(f"connection closed after {received} of {length} bytes", (hasher, hashed))
    return hasher, hashed


def _content_range_start(value: str) -> Optional[int]:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> Optional[int]:
    m = re.search(r"/(\d+)\s*$", value or "")
    return int(m.group(1)) if m else None
