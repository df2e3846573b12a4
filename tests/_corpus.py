"""The bad-input corpus's shared part: its book-keeping (which bad inputs were tried, per component,
and which of them ended with one clear error and nothing changed on disk) and the one set of helpers
every table uses (bad files, snapshots, ``assert_unchanged``). The tables live beside their
components: ``tests/datasets/test_bad_data.py``, ``tests/mri/test_bad_operators.py``,
``tests/models/test_bad_models.py``, ``tests/test_bad_cli.py``, ``tests/teaching/test_bad_notebook_params.py``.

``conftest.py`` prints the tally at the end of a pytest run (``pytest_terminal_summary``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from kdmri_lib.models import build_model
from kdmri_lib.models.checkpoint import model_checkpoint, save_checkpoint
from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import ismrmrd_header, write_volume

#: component -> case ids declared in the corpus tables
DECLARED: dict[str, list[str]] = {}
#: (component, case id) of every case that passed: one clear error, files unchanged
PASSED: list[tuple[str, str]] = []


def declare(component: str, ids) -> None:
    DECLARED.setdefault(component, []).extend(ids)


def record(component: str, case: str) -> None:
    PASSED.append((component, case))


def tally() -> dict[str, tuple[int, int]]:
    """component -> (cases declared, cases that ended with one clear error and nothing lost)."""
    ok = Counter(c for c, _ in PASSED)
    return {c: (len(ids), ok.get(c, 0)) for c, ids in DECLARED.items()}


REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "data_scripts"
UNI = "dåta ü ñ"          # unicode and spaces in every folder name of the corpus

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP's spinning
    threads can slow a forward pass down 50-fold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def noise(n: int, seed: int = 0) -> bytes:
    """``n`` random bytes, the same on every run (a corpus must not be flaky)."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (byte-identical check)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stat_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns): cheap check that a large folder was not touched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def assert_unchanged(before: dict, after: dict) -> None:
    changed = sorted(k for k in before if before.get(k) != after.get(k))
    assert not changed, f"files changed or removed by a failed call: {changed[:5]}"


def kspace(slices=2, h=32, w=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = physics.fft2c(torch.from_numpy(rng.random((slices, h, w)).astype(np.float32))).numpy()
    return k.astype(np.complex64)


def good_volume(path: Path, k=None) -> Path:
    k = kspace() if k is None else k
    target = np.abs(physics.ifft2c(torch.from_numpy(k)).numpy()).astype(np.float32)
    write_volume(path, k, target, {"acquisition": "AXT1", "patient_id": "p"}, tmp_dir=path.parent)
    return path


def raw_h5(path: Path, header: Any = "auto", **datasets) -> Path:
    """An HDF5 file with exactly the given datasets (bad files are built with this)."""
    with h5py.File(path, "w") as hf:
        for k, v in datasets.items():
            if isinstance(v, str) and v == "group":
                hf.create_group(k)
            else:
                hf.create_dataset(k, data=v)
        if header == "auto":
            ks = datasets.get("kspace")
            shape = np.shape(ks) if not isinstance(ks, str) else (1, 32, 32)
            h, w = (shape[-2], shape[-1]) if len(shape) >= 2 else (32, 32)
            hf.create_dataset("ismrmrd_header", data=np.bytes_(ismrmrd_header((h, w, 1), (h, w, 1))))
        elif header is not None:
            hf.create_dataset("ismrmrd_header", data=np.bytes_(header))
    return path


def _truncated(frac: float) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        good_volume(p.with_suffix(".tmp"))
        b = p.with_suffix(".tmp").read_bytes()
        p.with_suffix(".tmp").unlink()
        p.write_bytes(b[: int(len(b) * frac)])
        return p
    return make


def _corrupt_signature(p: Path) -> Path:
    good_volume(p)
    b = bytearray(p.read_bytes())
    b[:8] = b"\x00" * 8                                   # the HDF5 signature
    p.write_bytes(bytes(b))
    return p


def _corrupt_object_headers(p: Path) -> Path:
    good_volume(p)
    b = bytearray(p.read_bytes())
    rng = np.random.default_rng(0)
    b[96:2048] = rng.integers(0, 256, 2048 - 96, dtype=np.uint8).tobytes()   # superblock kept, metadata garbled
    p.write_bytes(bytes(b))
    return p


def _with_values(value) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        k = kspace()
        k[0, 3, 3] = value
        with h5py.File(good_volume(p), "r+") as hf:
            hf["kspace"][...] = k
        return p
    return make


def _zeros(p: Path) -> Path:
    write_volume(p, np.zeros((1, 32, 32), np.complex64), np.zeros((1, 32, 32), np.float32), {}, tmp_dir=p.parent)
    return p


def _png(p: Path, size=(48, 48)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)).save(p)
    return p


def _truncated_png(p: Path) -> Path:
    _png(p, (96, 96))
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])
    return p


def read_all(ds) -> int:
    for i in range(len(ds)):
        ds[i]
    return len(ds)



def _good_ckpt(p: Path, kind="student", preset="tiny", task="sr", factor=4) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(model_checkpoint(build_model(kind, preset, task, factor), epoch=1), p)


# operators and inputs of the operator and model tables
SR = lambda: physics.build_operator("sr", 4, (32, 32))          # noqa: E731
CS = lambda: physics.build_operator("cs", 4, (32, 32))          # noqa: E731
IMG = lambda *s, **k: torch.zeros(*s, **k)                      # noqa: E731
C64 = torch.complex64
