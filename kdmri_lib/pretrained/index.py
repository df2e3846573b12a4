"""The zoo's index: its manifest, each model's card, the verified file behind a ``pretrained:NAME``
checkpoint argument. Plain files and hashes only, so that :mod:`kdmri_lib.models.checkpoint` can resolve a
zoo name without importing anything above it; :mod:`kdmri_lib.pretrained` re-exports all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from kdmri_lib.core.errors import CheckpointError

__all__ = ["ZOO_DIR", "MANIFEST", "PREFIX", "sha256_file", "manifest", "names", "card", "path", "verify", "find",
           "zoo_name", "resolve"]

ZOO_DIR = Path(__file__).resolve().parent
MANIFEST = ZOO_DIR / "manifest.json"
#: a checkpoint argument ``pretrained:NAME`` names a zoo entry
PREFIX = "pretrained:"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(manifest_path: str | os.PathLike = MANIFEST) -> dict:
    """The zoo's manifest (``{"models": [...], ...}``); an empty zoo when the file does not exist."""
    p = Path(manifest_path)
    if not p.exists():
        return {"models": []}
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p}: unreadable zoo manifest ({e}); reinstall kdmri or run `make pretrained`") from None
    if not isinstance(m, dict) or not isinstance(m.get("models"), list):
        raise CheckpointError(f"{p}: not a zoo manifest (expected a JSON object with a 'models' list)")
    return m


def names(manifest_path: str | os.PathLike = MANIFEST) -> list[str]:
    """Names of the zoo's models."""
    return [e["name"] for e in manifest(manifest_path)["models"]]


def card(name: str, manifest_path: str | os.PathLike = MANIFEST) -> dict:
    """The manifest entry of ``name`` (a copy)."""
    for e in manifest(manifest_path)["models"]:
        if e.get("name") == name:
            return dict(e)
    known = ", ".join(names(manifest_path)) or "none: run `make pretrained`"
    raise CheckpointError(f"pretrained model {name!r} is not in the zoo ({Path(manifest_path)}); available: {known}")


def path(name: str, manifest_path: str | os.PathLike = MANIFEST) -> Path:
    """The checkpoint file of ``name`` (not verified: see :func:`verify`)."""
    return Path(manifest_path).parent / card(name, manifest_path)["file"]


def verify(name: str, manifest_path: str | os.PathLike = MANIFEST) -> Path:
    """The checkpoint file of ``name`` after checking that it exists and has the card's sha256."""
    c = card(name, manifest_path)
    p = Path(manifest_path).parent / c["file"]
    if not p.is_file():
        raise CheckpointError(f"{p}: pretrained checkpoint {name!r} is missing (expected sha256 {c['sha256']}); "
                              f"reinstall kdmri or rebuild the zoo with `make pretrained`")
    actual = sha256_file(p)
    if actual != c["sha256"]:
        raise CheckpointError(f"{p}: pretrained checkpoint {name!r} does not match its card: expected sha256 "
                              f"{c['sha256']}, got {actual} ({p.stat().st_size} bytes); the file is truncated, damaged "
                              f"or was replaced. Reinstall kdmri or rebuild the zoo with `make pretrained`")
    return p


def find(kind: str, task: str, factor: int, preset: Optional[str] = None,
         manifest_path: str | os.PathLike = MANIFEST, missing_ok: bool = False,
         train_files: Optional[Sequence[str]] = None) -> Optional[str]:
    """The name of the zoo model of this kind / task / factor (and preset, if given) with the best
    demo-validation PSNR; when there is none, None with ``missing_ok``, else a
    :class:`CheckpointError` listing the zoo. ``train_files``: only entries trained on exactly
    these file patterns (e.g. the protocol's source domain, :data:`kdmri_lib.datasets.protocol.DEFAULT`)."""
    rows = [e for e in manifest(manifest_path)["models"]
            if (e["kind"], e["task"], int(e["factor"])) == (kind, task, int(factor)) and preset in (None, e["preset"])
            and (train_files is None or e.get("train_files") == list(train_files))]
    if not rows and missing_ok:
        return None
    if not rows:
        have = ", ".join(f"{e['name']} ({e['kind']} {e['preset']} {e['task']} x{e['factor']})"
                         for e in manifest(manifest_path)["models"]) or "nothing"
        want = (f"{kind}{' ' + preset if preset else ''} for {task} x{factor}"
                + (f" trained on {', '.join(train_files)} only" if train_files is not None else ""))
        raise CheckpointError(f"the pretrained zoo has no {want} (it holds {have}); train one instead "
                              f"(teacher='train' in the notebooks, or `python -m kdmri_lib.train {kind} ...`)")
    return max(rows, key=lambda e: e.get("metrics", {}).get("PSNR", float("-inf")))["name"]


def zoo_name(spec: str | os.PathLike) -> Optional[str]:
    """``NAME`` of a ``pretrained:NAME`` checkpoint argument, else None (a path)."""
    s = str(spec)
    return s[len(PREFIX):] if s.startswith(PREFIX) else None


def resolve(spec: str | os.PathLike, manifest_path: str | os.PathLike = MANIFEST) -> Path:
    """A checkpoint argument as a path: ``pretrained:NAME`` -> the verified zoo file; else unchanged."""
    name = zoo_name(spec)
    return Path(spec) if name is None else verify(name, manifest_path)
