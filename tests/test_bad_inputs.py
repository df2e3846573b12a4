"""The bad-input corpus: every user mistake ends in ONE clear error and nothing is lost.

One table per component — data loaders, operators, models, checkpoints, command-line programs,
notebook parameters — lists bad inputs; each case asserts that

* the error is one of the toolkit's own (:class:`~kdmri_lib.core.errors.KdmriError`: ``ConfigError``,
  ``DataError``, ``CheckpointError``), whose message names the input and says what was expected —
  for a command line: exit code 2, exactly one ``error:`` line on stderr, no ``Traceback``;
* the files that existed before are byte-identical afterwards (and the demo data untouched).

``_corpus.py`` counts the cases per component; ``conftest.py`` prints the tally after the run.
``CKPT_FIXED`` and the two ``--out is a file`` cases pin fixes of defects this corpus found.

Related tests elsewhere (not repeated here): tests/test_data.py (truncated / wrong-key files,
NaN and all-zero slices, dataset parameters), tests/test_physics.py (operator parameters),
tests/test_models.py (wrong channels / sizes / operators), tests/test_train.py (TrainConfig
values, truncated and foreign checkpoints, resume with other settings, CLI errors),
tests/test_real_data.py (downloads, archives, knee-file verification), tests/test_notebooks.py
(a bad notebook parameter through papermill).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import torch
from _corpus import declare, record
from PIL import Image

from kdmri_lib.core.errors import CheckpointError, ConfigError, DataError
from kdmri_lib.datasets import data as D
from kdmri_lib.engine.train import TrainConfig
from kdmri_lib.models import build_model
from kdmri_lib.models.checkpoint import load_checkpoint, load_model, model_checkpoint, save_checkpoint
from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import check_file, ismrmrd_header, write_volume
from kdmri_lib.mri.masks import make_mask

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


# --------------------------------------------------------------------------------------------
# 1. data loaders: MRISliceDataset, build_dataset, NaturalImageDataset, load_slice, check_file
# --------------------------------------------------------------------------------------------

HDR = ismrmrd_header((32, 32, 1), (32, 32, 1))
BAD_FILES = {
    # id: (writer of "bad ü.h5", task, factor, exception, message)
    "text-file-named-h5": (lambda p: p.write_text("this is not HDF5\n") or p, "cs", 4, DataError, "not a readable HDF5 file"),
    "zero-bytes": (lambda p: p.write_bytes(b"") or p, "cs", 4, DataError, r"empty \(0 bytes\)"),
    "random-bytes": (lambda p: p.write_bytes(noise(4096)) or p, "cs", 4, DataError, "not a readable HDF5 file"),
    "truncated-to-1kB": (_truncated(0.005), "cs", 4, DataError, "truncated or corrupt"),
    "truncated-to-half": (_truncated(0.5), "cs", 4, DataError, "corrupt"),
    "truncated-to-99pct": (_truncated(0.99), "cs", 4, DataError, "corrupt"),
    "hdf5-signature-zeroed": (_corrupt_signature, "cs", 4, DataError, "not a readable HDF5 file"),
    "hdf5-metadata-garbled": (_corrupt_object_headers, "cs", 4, DataError, "HDF5"),
    "no-kspace-key": (lambda p: raw_h5(p, header=HDR, image=np.zeros((1, 32, 32))), "cs", 4, DataError, "no 'kspace' dataset"),
    "kspace-is-a-group": (lambda p: raw_h5(p, kspace="group"), "cs", 4, DataError, "'kspace' is a group"),
    "kspace-float32": (lambda p: raw_h5(p, kspace=np.zeros((1, 32, 32), np.float32)), "cs", 4, DataError, "dtype float32"),
    "kspace-int16": (lambda p: raw_h5(p, kspace=np.zeros((1, 32, 32), np.int16)), "cs", 4, DataError, "dtype int16"),
    "kspace-rank-2": (lambda p: raw_h5(p, kspace=np.zeros((32, 32), np.complex64)), "cs", 4, DataError, r"shape \(32, 32\)"),
    "kspace-rank-4-multicoil": (lambda p: raw_h5(p, kspace=np.zeros((1, 4, 32, 32), np.complex64)), "cs", 4, DataError, "multi-coil"),
    "kspace-no-slices": (lambda p: raw_h5(p, kspace=np.zeros((0, 32, 32), np.complex64)), "cs", 4, DataError, "no slices"),
    "no-ismrmrd-header": (lambda p: raw_h5(p, header=None, kspace=kspace()), "cs", 4, DataError, "no 'ismrmrd_header'"),
    "header-not-xml": (lambda p: raw_h5(p, header=b"<ismrmrdHeader", kspace=kspace()), "cs", 4, DataError, "not a valid ISMRMRD"),
    "header-without-encoding": (lambda p: raw_h5(p, header=b"<ismrmrdHeader/>", kspace=kspace()), "cs", 4, DataError,
                                "not a valid ISMRMRD"),
    "target-wrong-slices": (lambda p: raw_h5(p, kspace=kspace(2), reconstruction_esc=np.zeros((3, 32, 32), np.float32)),
                            "cs", 4, DataError, "'reconstruction_esc' has shape"),
    "target-complex": (lambda p: raw_h5(p, kspace=kspace(2), reconstruction_esc=kspace(2)), "cs", 4, DataError,
                       "'reconstruction_esc' has dtype complex64"),
    "target-rank-2": (lambda p: raw_h5(p, kspace=kspace(2), reconstruction_esc=np.zeros((32, 32), np.float32)), "cs", 4,
                      DataError, "'reconstruction_esc' has shape"),
    "nan-in-kspace": (_with_values(np.nan), "cs", 4, DataError, "NaN or Inf"),
    "inf-in-kspace": (_with_values(np.inf), "cs", 4, DataError, "NaN or Inf"),
    "complex-nan-in-kspace": (_with_values(complex(0, np.nan)), "sr", 4, DataError, "NaN or Inf"),
    "all-zero-slice": (_zeros, "cs", 4, DataError, "all zeros"),
    "all-zero-slice-sr": (_zeros, "sr", 2, DataError, "all zeros"),
    "matrix-30-for-sr-x4": (lambda p: good_volume(p, kspace(1, 30, 30)), "sr", 4, DataError, "not divisible by the sr scale 4"),
    "matrix-36x20-for-sr-x8": (lambda p: good_volume(p, kspace(1, 36, 20)), "sr", 8, DataError, "not divisible by the sr scale 8"),
    "matrix-2-columns-for-cs-x4": (lambda p: good_volume(p, kspace(1, 32, 2)), "cs", 4, ConfigError, "acceleration 4 is larger"),
}
declare("data loaders", [f"file:{k}" for k in BAD_FILES])


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_among_good_ones(tmp_path, case):
    """One bad file among good ones: the dataset (or its first read) names it; nothing changes."""
    make, task, factor, exc, match = BAD_FILES[case]
    root = tmp_path / UNI
    root.mkdir()
    good_volume(root / "good.h5")
    make(root / "bad ü.h5")
    (root / "notes.txt").write_text("a file that is not data")
    before = snapshot(root)
    with pytest.raises(exc, match=match) as ei:
        read_all(D.MRISliceDataset(root, task, factor))
    msg = str(ei.value)
    assert "bad ü.h5" in msg, msg
    assert "\n" not in msg.strip() or "Traceback" not in msg
    assert_unchanged(before, snapshot(root))
    record("data loaders", f"file:{case}")


def _natural(tmp: Path, files: dict[str, Callable[[Path], Any]]) -> Path:
    root = tmp / f"images {UNI}"
    root.mkdir()
    for name, make in files.items():
        make(root / name)
    return root


FOLDER_CASES = {
    # id: (maker(tmp) -> thunk, exception, message that must appear; "{root}" is the folder)
    "mri-folder-missing": (lambda t: lambda: D.MRISliceDataset(t / UNI / "nowhere", "sr", 4), DataError, "data folder not found"),
    "mri-folder-is-a-file": (lambda t: (t / "f ü.h5").write_text("x") and (lambda: D.MRISliceDataset(t / "f ü.h5", "sr", 4)),
                             DataError, "expected a folder"),
    "mri-folder-empty": (lambda t: (t / UNI).mkdir() or (lambda: D.MRISliceDataset(t / UNI, "sr", 4)), DataError, "no .h5 files"),
    "mri-folder-only-other-files": (lambda t: (t / UNI).mkdir() or (t / UNI / "a.txt").write_text("x") and
                                    (t / UNI / ".hidden.h5").write_text("x") and
                                    (lambda: D.MRISliceDataset(t / UNI, "sr", 4)), DataError, "no .h5 files"),
    "build-dataset-no-split-folder": (lambda t: (t / UNI).mkdir() or (lambda: D.build_dataset(t / UNI, "train", "sr", 4)),
                                      DataError, "no singlecoil_train/"),
    "build-dataset-split-test-missing": (lambda t: (t / UNI / "singlecoil_val").mkdir(parents=True) or
                                         good_volume(t / UNI / "singlecoil_val" / "a.h5") and
                                         (lambda: D.build_dataset(t / UNI, "test", "cs", 4)), DataError, "no singlecoil_test/"),
    "natural-folder-missing": (lambda t: lambda: D.NaturalImageDataset(t / "no images", "sr", 4), DataError, "image folder not found"),
    "natural-folder-empty": (lambda t: lambda: D.NaturalImageDataset(_natural(t, {}), "sr", 4), DataError, "no images"),
    "natural-only-text": (lambda t: lambda: D.NaturalImageDataset(_natural(t, {"a.txt": lambda p: p.write_text("x")}), "sr", 4),
                          DataError, "no images"),
    "natural-garbage-png": (lambda t: lambda: read_all(D.NaturalImageDataset(
        _natural(t, {"ok.png": _png, "bad ü.png": lambda p: p.write_bytes(noise(300))}), "sr", 4)),
        DataError, r"bad ü\.png: not a readable image"),
    "natural-zero-byte-png": (lambda t: lambda: read_all(D.NaturalImageDataset(
        _natural(t, {"ok.png": _png, "bad ü.png": lambda p: p.write_bytes(b"")}), "sr", 4)), DataError, r"bad ü\.png"),
    "natural-truncated-png": (lambda t: lambda: read_all(D.NaturalImageDataset(
        _natural(t, {"ok.png": _png, "bad ü.png": _truncated_png}), "sr", 4)), DataError, r"bad ü\.png"),
    "natural-jpeg-named-png-garbage": (lambda t: lambda: read_all(D.NaturalImageDataset(
        _natural(t, {"bad ü.jpg": lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + noise(100))}), "sr", 4)),
        DataError, r"bad ü\.jpg"),
    "natural-image-4x4": (lambda t: lambda: read_all(D.NaturalImageDataset(
        _natural(t, {"tiny ü.png": lambda p: _png(p, (4, 4))}), "sr", 4)), DataError, "too small"),
    "load-slice-volume-missing": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                                  (lambda: D.load_slice(t / UNI, "missing ü.h5")), DataError, r"missing ü\.h5: file not found"),
    "load-slice-number-too-large": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                                    (lambda: D.load_slice(t / UNI, "a.h5", 99)), ConfigError, "slice_num must be <= 1"),
    "load-slice-number-negative": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                                   (lambda: D.load_slice(t / UNI, "a.h5", -1)), ConfigError, "slice_num must be >= 0"),
    "load-slice-number-string": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                                 (lambda: D.load_slice(t / UNI, "a.h5", "1")), ConfigError, "slice_num must be an integer"),
    "load-volume-missing": (lambda t: lambda: D.load_volume(t / UNI / "none.h5", "sr", 4), DataError, "file not found"),
    "check-file-needs-target": (lambda t: (t / UNI).mkdir() or raw_h5(t / UNI / "k.h5", kspace=kspace()) and
                                (lambda: check_file(t / UNI / "k.h5", require_target=True)), DataError, "no 'reconstruction_esc'"),
    "check-file-full-nan": (lambda t: (t / UNI).mkdir() or _with_values(np.nan)(t / UNI / "n.h5") and
                            (lambda: check_file(t / UNI / "n.h5", full=True)), DataError, "kspace slice 0 contains NaN"),
    "dataset-task-unknown": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                             (lambda: D.MRISliceDataset(t / UNI, "SR", 4)), ConfigError, "task must be one of"),
    "dataset-factor-zero": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                            (lambda: D.MRISliceDataset(t / UNI, "cs", 0)), ConfigError, "acceleration must be >= 1"),
    "dataset-factor-float": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                             (lambda: D.MRISliceDataset(t / UNI, "sr", 2.5)), ConfigError, "scale must be an integer"),
    "config-patch-size": (lambda t: (lambda: TrainConfig.from_dict({"patch_size": 64})),
                          ConfigError, "patch_size=64: training on patches is not supported"),
    "natural-size-not-divisible": (lambda t: lambda: D.NaturalImageDataset(
        _natural(t, {"ok.png": _png}), "sr", 4, size=(30, 32)), ConfigError, "size 30x32 must be divisible by the sr scale 4"),
    "dataset-mask-type-unknown": (lambda t: (t / UNI).mkdir() or good_volume(t / UNI / "a.h5") and
                                  (lambda: D.MRISliceDataset(t / UNI, "cs", 4, mask_type="radial")), ConfigError,
                                  "mask_type must be one of"),
}
declare("data loaders", [f"folder:{k}" for k in FOLDER_CASES])


@pytest.mark.parametrize("case", list(FOLDER_CASES), ids=list(FOLDER_CASES))
def test_bad_folder_or_argument(tmp_path, case):
    make, exc, match = FOLDER_CASES[case]
    thunk = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(exc, match=match):
        thunk()
    assert_unchanged(before, snapshot(tmp_path))
    record("data loaders", f"folder:{case}")


# --------------------------------------------------------------------------------------------
# 2. operators: build_operator, forward / adjoint / initial / simulate, masks
# --------------------------------------------------------------------------------------------

SR = lambda: physics.build_operator("sr", 4, (32, 32))          # noqa: E731
CS = lambda: physics.build_operator("cs", 4, (32, 32))          # noqa: E731
IMG = lambda *s, **k: torch.zeros(*s, **k)                      # noqa: E731
C64 = torch.complex64

OPERATOR_CASES = {
    "task-None": (lambda: physics.build_operator(None, 4, (32, 32)), "task must be one of"),
    "task-uppercase": (lambda: physics.build_operator("SR", 4, (32, 32)), "task must be one of"),
    "task-list": (lambda: physics.build_operator(["sr"], 4, (32, 32)), "task must be one of"),
    "factor-bool": (lambda: physics.build_operator("cs", True, (32, 32)), "acceleration must be an integer"),
    "factor-2.5": (lambda: physics.build_operator("sr", 2.5, (32, 32)), "scale must be an integer"),
    "factor-string": (lambda: physics.build_operator("sr", "4", (32, 32)), "scale must be an integer"),
    "factor-zero": (lambda: physics.build_operator("sr", 0, (32, 32)), "scale must be >= 1"),
    "factor-negative": (lambda: physics.build_operator("cs", -8, (32, 32)), "acceleration must be >= 1"),
    "acceleration-above-width": (lambda: physics.build_operator("cs", 64, (32, 32)), "acceleration 64 is larger"),
    "acceleration-8-on-4-columns": (lambda: physics.build_operator("cs", 8, (32, 4)), "acceleration 8 is larger"),
    "shape-None": (lambda: physics.build_operator("cs", 4, None), "shape must be a pair"),
    "shape-3-tuple": (lambda: physics.build_operator("cs", 4, (32, 32, 1)), "shape must be a pair"),
    "shape-float": (lambda: physics.build_operator("cs", 4, (32.5, 32)), "must be an integer"),
    "shape-negative": (lambda: physics.build_operator("cs", 4, (-32, 32)), "must be >= 2"),
    "shape-1x1": (lambda: physics.build_operator("sr", 2, (1, 1)), "must be >= 2"),
    "sr-size-not-divisible": (lambda: physics.build_operator("sr", 8, (36, 32)), "does not divide"),
    "center-fraction-nan": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=float("nan")), "finite"),
    "center-fraction-negative": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=-0.1), ">= 0.0"),
    "center-fraction-above-1/acc": (lambda: physics.build_operator("cs", 4, (32, 32), center_fraction=0.5), "center_fraction"),
    "mask-type-unknown": (lambda: physics.build_operator("cs", 4, (32, 32), mask_type="spiral"), "mask_type must be one of"),
    "magic-mask-width-not-divisible": (lambda: physics.build_operator("cs", 4, (32, 30), mask_type="magic"), "divisible"),
    "mask-seed-string": (lambda: physics.build_operator("cs", 4, (32, 32), seed="abc"), "seed must be an integer"),
    "mask-seed-negative": (lambda: physics.build_operator("cs", 4, (32, 32), seed=-1), "seed must be >= 0"),
    "mask-seed-2**40": (lambda: physics.build_operator("cs", 4, (32, 32), seed=2**40), "seed must be <="),
    "mask-seed-tuple-of-strings": (lambda: physics.build_operator("cs", 4, (32, 32), seed=("a",)), "mask seed must be"),
    "mask-seed-empty-tuple": (lambda: physics.build_operator("cs", 4, (32, 32), seed=()), "mask seed must be"),
    "mask-wrong-width": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(31)), "mask must be a real tensor"),
    "mask-nan": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.full((32,), float("nan"))), "0 or 1"),
    "mask-values-2": (lambda: physics.build_operator("cs", 4, (32, 32), mask=2 * torch.ones(32)), "0 or 1"),
    "mask-all-zero": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.zeros(2, 1, 1, 32)), "no k-space column"),
    "mask-complex": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(32, dtype=C64)), "real tensor"),
    "mask-scalar": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.tensor(1.0)), "real tensor"),
    "mask-string": (lambda: physics.build_operator("cs", 4, (32, 32), mask="all"), "mask must be"),
    "kspace-shape-smaller": (lambda: physics.build_operator("cs", 4, (32, 32), kspace_shape=(16, 40)), "at least the image"),
    "forward-numpy": (lambda: SR().forward(np.zeros((1, 1, 32, 32))), "must be a torch.Tensor"),
    "forward-list": (lambda: CS().forward([[0.0]]), "must be a torch.Tensor"),
    "forward-3d": (lambda: SR().forward(IMG(1, 32, 32)), r"\(B, 1, 32, 32\)"),
    "forward-5d": (lambda: SR().forward(IMG(1, 1, 1, 32, 32)), r"\(B, 1, 32, 32\)"),
    "forward-2-channels": (lambda: CS().forward(IMG(1, 2, 32, 32)), r"got \(1, 2, 32, 32\)"),
    "forward-wrong-size": (lambda: CS().forward(IMG(1, 1, 32, 31)), r"got \(1, 1, 32, 31\)"),
    "forward-empty-batch": (lambda: SR().forward(IMG(0, 1, 32, 32)), "B >= 1"),
    "forward-masks-vs-batch": (lambda: physics.build_operator("cs", 4, (32, 32), mask=torch.ones(3, 1, 1, 32))
                               .forward(IMG(2, 1, 32, 32)), "3 masks but the batch has 2"),
    "adjoint-image-sized-y": (lambda: SR().adjoint(IMG(1, 1, 32, 32, dtype=C64)), r"\(B, 1, 8, 8\)"),
    "adjoint-numpy": (lambda: SR().adjoint(np.zeros((1, 1, 8, 8))), "must be a torch.Tensor"),
    "initial-wrong-size": (lambda: SR().initial(IMG(1, 1, 16, 16, dtype=C64)), r"\(B, 1, 8, 8\)"),
    "initial-empty-batch": (lambda: CS().initial(IMG(0, 1, 32, 32, dtype=C64)), "B >= 1"),
    "simulate-nan-image": (lambda: SR().simulate(torch.full((1, 1, 32, 32), float("nan"))), "NaN or Inf"),
    "simulate-inf-image": (lambda: CS().simulate(torch.full((1, 1, 32, 32), float("inf"))), "NaN or Inf"),
    "simulate-noise-negative": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std=-1), "noise_std must be >= 0"),
    "simulate-noise-nan": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std=float("nan")), "noise_std must be finite"),
    "simulate-noise-string": (lambda: SR().simulate(IMG(1, 1, 32, 32), noise_std="0.1"), "noise_std must be a number"),
    "simulate-wrong-shape": (lambda: SR().simulate(IMG(32, 32)), r"\(B, 1, 32, 32\)"),
    "band-split-keep-0": (lambda: physics.band_split(IMG(8, 8), 0), "keep must be > 0"),
    "band-split-keep-1.5": (lambda: physics.band_split(IMG(8, 8), 1.5), "keep must be <= 1"),
    "centre-crop-larger": (lambda: physics.centre_crop(IMG(8, 8), (9, 9)), "cannot crop"),
    "centre-pad-smaller": (lambda: physics.centre_pad(IMG(8, 8), (4, 4)), "cannot pad"),
    "channels-to-complex-3ch": (lambda: physics.channels_to_complex(IMG(1, 3, 8, 8)), "expected 2 channels"),
    "make-mask-width-1": (lambda: make_mask(1, 4), "width must be >= 2"),
    "make-mask-too-few-columns": (lambda: make_mask(8, 8, center_fraction=0.0, seed=0), "measures no column"),
}
declare("operators", list(OPERATOR_CASES))


@pytest.mark.parametrize("case", list(OPERATOR_CASES), ids=list(OPERATOR_CASES))
def test_operator_bad_input(case):
    thunk, match = OPERATOR_CASES[case]
    with pytest.raises(ConfigError, match=match):
        thunk()
    record("operators", case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.float64])
def test_operators_accept_other_real_dtypes(dtype):
    """Not errors: integer, bool and half-precision images are promoted (FFTs need float32 on CPU)."""
    x = torch.ones(2, 1, 32, 32).to(dtype)
    for op in (SR(), CS()):
        y = op.forward(x)
        assert y.is_complex() and torch.isfinite(torch.view_as_real(y)).all()
        assert op.adjoint(y).shape == (2, 1, 32, 32)


# --------------------------------------------------------------------------------------------
# 3. models: build_model and model(y, op)
# --------------------------------------------------------------------------------------------

def _student():
    return build_model("student", "tiny", "sr", 4)


MODEL_CASES = {
    "kind-unknown": (lambda: build_model("vit"), "kind must be one of"),
    "kind-None": (lambda: build_model(None), "kind must be one of"),
    "preset-unknown": (lambda: build_model("teacher", "huge"), "preset must be one of"),
    "preset-None": (lambda: build_model("student", None), "preset must be one of"),
    "preset-int": (lambda: build_model("unet", 1), "preset must be one of"),
    "task-unknown": (lambda: build_model("student", "tiny", "mri", 4), "task must be one of"),
    "sr-scale-5": (lambda: build_model("student", "tiny", "sr", 5), "sr scale must be one of 2, 3, 4, 8"),
    "sr-scale-string": (lambda: build_model("teacher", "tiny", "sr", "4"), "must be an integer"),
    "cs-acceleration-0": (lambda: build_model("unet", "tiny", "cs", 0), "acceleration .* must be >= 1"),
    "override-unknown": (lambda: build_model("student", "tiny", "sr", 4, depth=3), "unknown student hyper-parameter"),
    "override-string": (lambda: build_model("student", "tiny", "sr", 4, iterations="3"), "iterations must be an integer"),
    "override-zero": (lambda: build_model("student", "tiny", "sr", 4, iterations=0), "iterations must be >= 1"),
    "teacher-embed-not-divisible": (lambda: build_model("teacher", "tiny", "sr", 4, embed_dim=7), "divisible by num_heads"),
    "baseline-with-override": (lambda: build_model("zero_filled", task="cs", factor=4, channels=3), "no hyper-parameters"),
    "bicubic-for-cs": (lambda: build_model("bicubic", task="cs", factor=4), "defined for task 'sr' only"),
    "forward-y-numpy": (lambda: _student()(np.zeros((1, 1, 8, 8), np.complex64), SR()), "complex tensor"),
    "forward-y-image-size": (lambda: _student()(IMG(1, 1, 32, 32, dtype=C64), SR()), r"\(B, 1, 8, 8\)"),
    "forward-y-3d": (lambda: _student()(IMG(1, 8, 8, dtype=C64), SR()), r"\(B, 1, 8, 8\)"),
    "forward-y-empty-batch": (lambda: _student()(IMG(0, 1, 8, 8, dtype=C64), SR()), "empty batch|B >= 1"),
    "forward-op-None": (lambda: _student()(IMG(1, 1, 8, 8, dtype=C64), None), "op must be an operator"),
    "forward-op-other-task": (lambda: _student()(IMG(1, 1, 32, 32, dtype=C64), CS()), "built for task 'sr'"),
    "forward-op-other-scale": (lambda: _student()(IMG(1, 1, 16, 16, dtype=C64), physics.build_operator("sr", 2, (32, 32))),
                               "scale 4"),
    "forward-op-is-a-function": (lambda: _student()(IMG(1, 1, 8, 8, dtype=C64), lambda x: x), "op must be an operator"),
}
declare("models", list(MODEL_CASES))


@pytest.mark.parametrize("case", list(MODEL_CASES), ids=list(MODEL_CASES))
def test_model_bad_input(case):
    thunk, match = MODEL_CASES[case]
    with pytest.raises(ConfigError, match=match):
        thunk()
    record("models", case)


# --------------------------------------------------------------------------------------------
# 4. checkpoints: truncated, foreign, hostile, another model
# --------------------------------------------------------------------------------------------

class _Evil:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for arbitrary code in a pickle."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _EvilSystem:
    def __reduce__(self):
        return (os.system, ("true",))


def _good_ckpt(p: Path, kind="student", preset="tiny", task="sr", factor=4) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(model_checkpoint(build_model(kind, preset, task, factor), epoch=1), p)


def _evil_file(p: Path, how: str) -> Path:
    evil = _Evil()
    evil.marker = str(p.parent / "PWNED")
    obj = {"format": "kdmri-checkpoint", "kind": "student", "model_config": {}, "model": {}, "x": evil}
    if how == "system":     # a module torch blocks outright (its message differs); never executed here
        torch.save({**obj, "x": _EvilSystem()}, p)
    elif how == "torch":
        torch.save(obj, p)
    elif how == "pickle":
        p.write_bytes(pickle.dumps(obj, protocol=2))
    else:   # a real checkpoint zip whose data.pkl was swapped for the hostile pickle
        good = _good_ckpt(p.with_name("donor.pt"))
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(p, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename.endswith("data.pkl"):
                    data = pickle.dumps(obj, protocol=2)
                zout.writestr(item, data)
        good.unlink()
    return p


def _zip(p: Path, members: dict) -> Path:
    with zipfile.ZipFile(p, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return p


def _cut(frac: float):
    def make(p: Path) -> Path:
        b = _good_ckpt(p.with_name("full.pt")).read_bytes()
        p.with_name("full.pt").unlink()
        p.write_bytes(b[: int(len(b) * frac)])
        return p
    return make


def _variant(**fields):
    def make(p: Path) -> Path:
        c = dict(load_checkpoint(_good_ckpt(p)))
        for k, v in fields.items():
            if v is KeyError:
                c.pop(k)
            else:
                c[k] = v
        torch.save(c, p)
        return p
    return make


CKPT_CASES = {
    # id: (maker, call, message)
    "missing": (lambda p: p, "load", "checkpoint not found"),
    "is-a-folder": (lambda p: p.mkdir() or p, "load", "is a folder"),
    "zero-bytes": (lambda p: p.write_bytes(b"") or p, "load", "0 bytes.*truncated or corrupt"),
    "truncated-100-bytes": (lambda p: p.write_bytes(_good_ckpt(p).read_bytes()[:100]) and p, "load",
                            "truncated or corrupt"),
    "truncated-to-third": (_cut(1 / 3), "load", "truncated or corrupt"),
    "truncated-to-half": (_cut(0.5), "load", "truncated or corrupt"),
    "truncated-last-byte": (_cut(0.9999), "load", "truncated or corrupt"),
    "text-file": (lambda p: p.write_text("hello\n") and p, "load", "cannot read this checkpoint"),
    "random-bytes": (lambda p: p.write_bytes(noise(5000)) and p, "load", "checkpoint"),
    "zip-without-data": (lambda p: _zip(p, {"archive/x.txt": "x"}), "load", "cannot read this checkpoint"),
    "hostile-torch-save": (lambda p: _evil_file(p, "torch"), "load", "weights_only=True"),
    "hostile-os-system": (lambda p: _evil_file(p, "system"), "load", "weights_only=True"),
    "hostile-plain-pickle": (lambda p: _evil_file(p, "pickle"), "load", "weights_only=True"),
    "hostile-pickle-in-real-zip": (lambda p: _evil_file(p, "zip"), "load", "weights_only=True"),
    "a-list": (lambda p: torch.save([1, 2, 3], p) or p, "load", "not a kdmri checkpoint"),
    "state-dict-only": (lambda p: torch.save(build_model("student").state_dict(), p) or p, "load", "not a kdmri checkpoint"),
    "newer-version": (_variant(version=99), "load", "newer than this kdmri"),
    "no-model-entry": (_variant(model=KeyError), "load", "no 'model' entry"),
    "no-model-config": (_variant(model_config=KeyError), "load", "no 'model_config' entry"),
    "weights-of-another-shape": (_variant(model={"denoiser.head.weight": torch.zeros(1)}), "build", "do not fit"),
    "config-unknown-preset": (_variant(model_config={"kind": "student", "preset": "huge", "task": "sr", "factor": 4}),
                              "build", "do not fit"),
    "expect-another-kind": (_good_ckpt, {"kind": "teacher"}, "holds a student tiny sr x4 model.*differs in kind"),
    "expect-another-preset": (_good_ckpt, {"preset": "paper"}, "differs in preset"),
    "expect-another-task": (_good_ckpt, {"task": "cs", "factor": 4}, "differs in task"),
    "expect-another-factor": (_good_ckpt, {"task": "sr", "factor": 2}, "differs in factor"),
    "teacher-where-student-expected": (lambda p: _good_ckpt(p, kind="teacher"), {"kind": "student"}, "differs in kind"),
    "unet-cs-where-sr-expected": (lambda p: _good_ckpt(p, kind="unet", task="cs"), {"kind": "unet", "task": "sr"},
                                  "differs in task"),
}
# cases that were known defects until checkpoint.load_checkpoint was fixed (kept apart: they pin those fixes)
CKPT_FIXED = {
    "version-not-a-number": (_variant(version="abc"), "load", "version"),
    "model-config-not-a-dict": (_variant(model_config="student"), {"kind": "student"}, "model_config"),
    "random-bytes-called-corrupt": (lambda p: p.write_bytes(noise(5000)) and p, "load", "truncated or corrupt"),
    "random-bytes-seed-17": (lambda p: p.write_bytes(noise(3000, 17)) and p, "load", "truncated or corrupt"),
    "hostile-pickle-names-the-global": (lambda p: _evil_file(p, "system"), "load", r"GLOBAL posix\.system"),
}
CKPT_CASES.update(CKPT_FIXED)
declare("checkpoints", list(CKPT_CASES))


def _ckpt_case(tmp_path, case, maker, call, match):
    d = tmp_path / UNI
    d.mkdir()
    path = maker(d / "ckpt ü.pt")
    before = snapshot(d)
    with pytest.raises(CheckpointError, match=match) as ei:
        if call == "load":
            load_checkpoint(path)
        elif call == "build":
            load_model(path)
        else:
            load_model(path, expect=call)
    assert "ckpt ü.pt" in str(ei.value)
    assert not (d / "PWNED").exists(), "a hostile pickle ran code"
    assert_unchanged(before, snapshot(d))
    record("checkpoints", case)


@pytest.mark.parametrize("case", list(CKPT_CASES), ids=list(CKPT_CASES))
def test_bad_checkpoint(tmp_path, case):
    _ckpt_case(tmp_path, case, *CKPT_CASES[case])



def test_hostile_pickle_would_run_code_without_weights_only(tmp_path):
    """Control for the hostile-checkpoint cases: the file really runs code when unpickled unsafely."""
    p = _evil_file(tmp_path / "evil.pt", "torch")
    torch.load(p, weights_only=False)  # unsafe-ok: the control that shows what weights_only=True prevents
    assert (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------------------------
# 5. command-line programs (in-process main(argv); a subprocess smoke test below)
# --------------------------------------------------------------------------------------------

def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_kdmri_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main(cli: str):
    if cli in ("make_demo_data", "prepare_brain_tumor", "prepare_fastmri", "prepare_natural"):
        return _script(cli).main
    return importlib.import_module(f"kdmri_lib.{cli}").main


@pytest.fixture
def world(tmp_path, demo_dir):
    """Folders and files the CLI cases point at (all names with unicode and spaces)."""
    w = tmp_path / UNI
    w.mkdir()
    (w / "a file.txt").write_text("not a folder")
    (w / "empty dir").mkdir()
    (w / "random.zip").write_bytes(noise(3000))
    (w / "random.tar.gz").write_bytes(noise(3000))
    (w / "random.pt").write_bytes(noise(3000))
    _good_ckpt(w / "student sr4.pt")
    _good_ckpt(w / "teacher cs4.pt", kind="teacher", task="cs")
    run = w / "old run"
    run.mkdir()
    c = dict(load_checkpoint(_good_ckpt(run / "last.pt")))
    c.update(epoch=1, step=0, global_step=2, train_config={"mode": "student", "task": "sr", "factor": 4, "preset": "small",
                                                          "batch_size": 2, "seed": 0})
    save_checkpoint(c, run / "last.pt")
    return {"w": w, "demo": demo_dir}


CPU = ("--device", "cpu")
TRAIN = ("--no-progress", "--quiet", "--device", "cpu", "--batch-size", "2", "--val-slices", "1",
         "--steps-per-epoch", "1", "--epochs", "1")

# id: (cli, argv(w, demo) -> list, message regex; exit code 2 unless noted)
CLI_CASES = {
    # data scripts
    "demo: --out is a file": ("make_demo_data", lambda w, d: ["--out", w / "a file.txt", "--quiet"], "is a file"),
    "demo: --out under a file": ("make_demo_data", lambda w, d: ["--out", w / "a file.txt" / "demo", "--quiet"], "is a file"),
    "demo: --matrix 100": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "100"], "matrix must be divisible by 16"),
    "demo: --matrix 32": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "32"], "matrix must be >= 64"),
    "demo: --matrix abc": ("make_demo_data", lambda w, d: ["--out", w / "o", "--matrix", "abc"], "invalid int value: 'abc'"),
    "demo: --stride 0": ("make_demo_data", lambda w, d: ["--out", w / "o", "--stride", "0"], "stride must be >= 1"),
    "demo: --stride 100000": ("make_demo_data", lambda w, d: ["--out", w / "o", "--stride", "100000", "--quiet"],
                              "no train volume.*smaller stride"),
    "demo: --seed -1": ("make_demo_data", lambda w, d: ["--out", w / "o", "--seed", "-1"], "seed must be >= 0"),
    "demo: --snr-db nan": ("make_demo_data", lambda w, d: ["--out", w / "o", "--snr-db", "nan"], "snr_db must be finite"),
    "demo: --snr-db -5": ("make_demo_data", lambda w, d: ["--out", w / "o", "--snr-db", "-5"], "snr_db must be >= 0"),
    "brain: --src missing": ("prepare_brain_tumor", lambda w, d: ["--src", w / "nope.zip", "--out", w / "b"], "nope.zip: not found"),
    "brain: --src random zip": ("prepare_brain_tumor", lambda w, d: ["--src", w / "random.zip", "--out", w / "b"],
                                "random.zip: cannot read the archive"),
    "brain: --src a text file": ("prepare_brain_tumor", lambda w, d: ["--src", w / "a file.txt", "--out", w / "b"],
                                 "not a folder or a supported archive"),
    "brain: --src empty folder": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b"],
                                  "not the Kaggle Brain Tumor MRI layout"),
    "brain: --out is a file": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "a file.txt"],
                               "--out must be a folder"),
    "brain: --out holds the demo data": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", d],
                                         "already holds the embedded demo data"),
    "brain: --n-train 0": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b", "--n-train", "0"],
                           "n_train must be >= 4"),
    "brain: --matrix 100": ("prepare_brain_tumor", lambda w, d: ["--src", w / "empty dir", "--out", w / "b", "--matrix", "100"],
                            "matrix must be divisible by 16"),
    "brain: --url ftp": ("prepare_brain_tumor", lambda w, d: ["--url", "ftp://h/x.zip", "--sha256", "0" * 64, "--out", w / "b"],
                         "url must start with http"),
    "brain: --url without --sha256": ("prepare_brain_tumor", lambda w, d: ["--url", "http://127.0.0.1:9/x.zip", "--out", w / "b"],
                                      "--url needs --sha256"),
    "brain: --sha256 not hex": ("prepare_brain_tumor", lambda w, d: ["--url", "http://127.0.0.1:9/x.zip", "--sha256", "xyz",
                                                                     "--out", w / "b"], "sha256 must be 64 hexadecimal"),
    "knee: --src missing": ("prepare_fastmri", lambda w, d: ["--src", w / "nope", "--out", w / "k"], "nope"),
    "knee: --src empty folder": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k"],
                                 "no fastMRI single-coil knee data"),
    "knee: --src a text file": ("prepare_fastmri", lambda w, d: ["--src", w / "a file.txt", "--out", w / "k"], "not a tar archive"),
    "knee: --out is a file": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "a file.txt"],
                              "--out must be a folder"),
    "knee: --sample-rate 0": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--sample-rate", "0"],
                              "sample_rate must be > 0"),
    "knee: --sample-rate 2": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--sample-rate", "2"],
                              "sample_rate must be <= 1"),
    "knee: --link bogus": ("prepare_fastmri", lambda w, d: ["--src", w / "empty dir", "--out", w / "k", "--link", "bogus"],
                           "invalid choice: 'bogus'"),
    "natural: --set5-src random zip": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                        w / "random.zip"], "cannot read the archive"),
    "natural: --set5-src empty folder": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                          w / "empty dir"], "no high-resolution Set5 images"),
    "natural: --set5-src missing": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src",
                                                                     w / "nope"], "nope: not found"),
    "natural: --out is a file": ("prepare_natural", lambda w, d: ["--out", w / "a file.txt", "--skip-flickr2k", "--set5-src",
                                                                  w / "empty dir"], "--out must be a folder"),
    "natural: no checksum": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k"], "no SHA-256 checksum is known"),
    "natural: --max-size 20": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-flickr2k", "--set5-src", w / "empty dir",
                                                                "--max-size", "20"], "max_size must be divisible by 16"),
    "natural: --n-train 0": ("prepare_natural", lambda w, d: ["--out", w / "n", "--skip-set5", "--flickr2k-src", w / "empty dir",
                                                              "--n-train", "0"], "n_train must be >= 1"),
    "natural: no --out": ("prepare_natural", lambda w, d: ["--skip-flickr2k"], "--out is required"),
    # training
    "train: --data missing": ("train", lambda w, d: ["student", "--data", w / "nowhere", "--out", w / "r", *TRAIN],
                              "data folder not found"),
    "train: --data is a file": ("train", lambda w, d: ["student", "--data", w / "a file.txt", "--out", w / "r", *TRAIN],
                                "a file.txt"),
    "train: --data empty": ("train", lambda w, d: ["student", "--data", w / "empty dir", "--out", w / "r", *TRAIN],
                            "no singlecoil_train/"),
    "train: --epochs 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--epochs", "0"],
                          "epochs must be >= 1"),
    "train: --epochs -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--epochs", "-1"],
                           "epochs must be >= 1"),
    "train: --epochs abc": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--epochs", "abc"],
                            "invalid int value: 'abc'"),
    "train: --epochs 2.5": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--epochs", "2.5"],
                            "invalid int value: '2.5'"),
    "train: --batch-size 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--batch-size", "0"],
                              "batch_size must be >= 1"),
    "train: unknown mode": ("train", lambda w, d: ["finetune", "--data", d, "--out", w / "r"], "invalid choice: 'finetune'"),
    "train: --preset huge": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--preset", "huge"],
                             "invalid choice: 'huge'"),
    "train: --task mri": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", "--task", "mri"], "invalid choice: 'mri'"),
    "train: --device tpu": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--device", "tpu"],
                            "device must be one of"),
    "train: --scale 5": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--scale", "5"],
                         "sr scale must be one of"),
    "train: --scale 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--scale", "0"],
                         "scale .* must be >= 2"),
    "train: --acceleration 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--task", "cs",
                                                       "--acceleration", "0"], "acceleration .* must be >= 1"),
    "train: --patch-size 64 (whole slices only)": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN,
                                                                          "--patch-size", "64"], "unrecognized arguments: --patch-size"),
    "train: --warmup-steps -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--warmup-steps", "-1"],
                                 "warmup_steps must be >= 0"),
    "train: --lr -1": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--lr", "-1"], "lr must be > 0"),
    "train: --lr nan": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--lr", "nan"], "lr must be finite"),
    "train: --val-slices 0": ("train", lambda w, d: ["student", "--data", d, "--out", w / "r", *TRAIN, "--val-slices", "0"],
                              "val_slices must be >= 1"),
    "train: teacher checkpoint is random bytes": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                         "--teacher-checkpoint", w / "random.pt"], "random.pt"),
    "train: teacher checkpoint missing": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                 "--teacher-checkpoint", w / "none.pt"], "file not found"),
    "train: teacher checkpoint is a student": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                      "--teacher-checkpoint", w / "student sr4.pt"],
                                               "differs in kind"),
    "train: teacher checkpoint of another task": ("train", lambda w, d: ["distill", "--data", d, "--out", w / "r", *TRAIN,
                                                                         "--teacher-checkpoint", w / "teacher cs4.pt"],
                                                  "differs in task"),
    "train: --resume a run of another preset": ("train", lambda w, d: ["student", "--data", d, "--out", w / "old run", *TRAIN,
                                                                       "--epochs", "2", "--resume"],
                                                "cannot resume.*preset: checkpoint 'small', now 'tiny'"),
    # reconstruction
    "recon: checkpoint random bytes": ("reconstruct", lambda w, d: ["--checkpoint", w / "random.pt", "--data", d, "--out",
                                                                    w / "rec", *CPU], "random.pt"),
    "recon: checkpoint missing": ("reconstruct", lambda w, d: ["--checkpoint", w / "none.pt", "--data", d, "--out", w / "rec",
                                                               *CPU], "checkpoint not found"),
    "recon: checkpoint is a folder": ("reconstruct", lambda w, d: ["--checkpoint", w / "empty dir", "--data", d, "--out",
                                                                   w / "rec", *CPU], "is a folder"),
    "recon: --task cs for an sr checkpoint": ("reconstruct", lambda w, d: ["--checkpoint", w / "student sr4.pt", "--task", "cs",
                                                                           "--data", d, "--out", w / "rec", *CPU],
                                              "holds a sr model"),
    "recon: --scale 2 for an x4 checkpoint": ("reconstruct", lambda w, d: ["--checkpoint", w / "student sr4.pt", "--scale", "2",
                                                                           "--data", d, "--out", w / "rec", *CPU], "sr x4 model"),
    "recon: --out is a file": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", d, "--out", w / "a file.txt",
                                                            *CPU], "is a file"),
    "recon: --scale 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--scale", "0", "--data", d, "--out",
                                                      w / "rec", *CPU], "scale .* must be >= 2"),
    "recon: --scale 5": ("reconstruct", lambda w, d: ["--baseline", "bicubic", "--scale", "5", "--data", d, "--out", w / "rec",
                                                      *CPU], "sr scale must be one of"),
    "recon: --acceleration 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--task", "cs", "--acceleration", "0",
                                                             "--data", d, "--out", w / "rec", *CPU], "acceleration .* must be >= 1"),
    "recon: --batch-size 0": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--batch-size", "0", "--data", d,
                                                           "--out", w / "rec", *CPU], "batch-size must be >= 1"),
    "recon: --device tpu": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", d, "--out", w / "rec",
                                                         "--device", "tpu"], "device must be one of"),
    "recon: bicubic for cs": ("reconstruct", lambda w, d: ["--baseline", "bicubic", "--task", "cs", "--data", d, "--out",
                                                           w / "rec", *CPU], "defined for task 'sr' only"),
    "recon: --split test missing": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--split", "test", "--data", d,
                                                                 "--out", w / "rec", *CPU], "no singlecoil_test/"),
    "recon: --data empty": ("reconstruct", lambda w, d: ["--baseline", "zero_filled", "--data", w / "empty dir", "--out",
                                                         w / "rec", *CPU], "no singlecoil_val/"),
    "recon: --baseline unknown": ("reconstruct", lambda w, d: ["--baseline", "sinc", "--data", d, "--out", w / "rec"],
                                  "invalid choice: 'sinc'"),
    # profiling
    "benchmark: --out is a file": ("benchmark", lambda w, d: ["--out", w / "a file.txt", "--tasks", "sr4", "--presets", "tiny",
                                                          "--size", "32", "--repeats", "1", "--no-reference", *CPU], "is a file"),
    "benchmark: --tasks sr5": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr5", "--presets", "tiny", "--size", "32",
                                                      *CPU], "sr scale must be one of"),
    "benchmark: --tasks xx": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "xx", *CPU], "tasks must look like"),
    "benchmark: --size 30 for x4": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr4", "--presets", "tiny", "--size",
                                                           "30", "--no-reference", *CPU], "does not divide the image size 30x30"),
    "benchmark: --size 0": ("benchmark", lambda w, d: ["--out", w / "p", "--size", "0", *CPU], "--size must be >= 8"),
    "benchmark: --repeats 0": ("benchmark", lambda w, d: ["--out", w / "p", "--repeats", "0", *CPU], "--repeats must be >= 1"),
    "benchmark: --threads 0": ("benchmark", lambda w, d: ["--out", w / "p", "--tasks", "sr4", "--presets", "tiny", "--size", "32",
                                                      "--threads", "0", "--no-reference", *CPU], "threads must be >= 1"),
    "benchmark: --budget nan": ("benchmark", lambda w, d: ["--out", w / "p", "--budget", "nan", *CPU], "--budget must be finite"),
    "benchmark: --presets huge": ("benchmark", lambda w, d: ["--out", w / "p", "--presets", "huge", *CPU], "--presets"),
    "benchmark: --device tpu": ("benchmark", lambda w, d: ["--out", w / "p", "--device", "tpu"], "device must be one of"),
    # ablation
    "ablation: --data is a file": ("ablation", lambda w, d: ["--out", w / "a", "--data", w / "a file.txt", *CPU],
                                   "no singlecoil_val/"),
    "ablation: --epochs 0": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--epochs", "0", *CPU], "epochs must be >= 1"),
    "ablation: --rows bogus": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--rows", "bogus", *CPU],
                               "unknown ablation row"),
    "ablation: --device tpu": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--device", "tpu"], "device must be one of"),
    "ablation: --scale 5": ("ablation", lambda w, d: ["--out", w / "a", "--data", d, "--scale", "5", *CPU],
                            "224x224 is not divisible by the sr scale 5"),
    # notebooks (papermill runner): refused before a kernel starts
    "notebook: --only unknown": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--only", "99_bogus"], "unknown notebook"),
    "notebook: --out is a file": ("notebook_runner", lambda w, d: ["--out", w / "a file.txt", "--only", "01_kspace_basics"], "is a file"),
    "notebook: -p task mri": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "task", "mri"],
                              "notebook parameter 'task' must be one of"),
    "notebook: -p epochs 0": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "epochs", "0"],
                              "notebook parameter 'epochs' must be >= 1"),
    "notebook: -p batch_size '\"8\"'": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", d, "-p", "batch_size", '"8"'],
                                        "notebook parameter 'batch_size' must be an integer"),
    "notebook: --data missing": ("notebook_runner", lambda w, d: ["--out", w / "nb", "--data", w / "nowhere"], "folder not found"),
}
CLI_CASES.update({
    "train: --out is a file": ("train", lambda w, d: ["student", "--data", d, "--out", w / "a file.txt", *TRAIN], "is a file"),
    "ablation: --out is a file": ("ablation", lambda w, d: ["--out", w / "a file.txt", "--data", d, "--rows", "zero_filled",
                                                            *CPU], "is a file"),
})
declare("command-line programs", list(CLI_CASES))


def _run_cli_case(case, cli, argv_of, match, world, capsys):
    w, demo = world["w"], world["demo"]
    argv = [str(a) for a in argv_of(w, demo)]
    before, demo_before = snapshot(w), stat_snapshot(demo)
    capsys.readouterr()
    try:
        code = _main(cli)(argv)
    except SystemExit as e:          # argparse: usage + "prog: error: ..." and exit code 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    assert_unchanged(before, snapshot(w))
    assert_unchanged(demo_before, stat_snapshot(demo))
    record("command-line programs", case)


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_bad_input(case, world, capsys):
    _run_cli_case(case, *CLI_CASES[case], world, capsys)



def test_cli_bad_inputs_as_real_processes(tmp_path, demo_dir):
    """The same promise through real processes (one bad input per program, run side by side):
    exit code 2, one ``error:`` line naming the input, no traceback."""
    w = tmp_path / UNI
    (w / "empty dir").mkdir(parents=True)
    (w / "random.pt").write_bytes(noise(2000))
    py = sys.executable
    cases = {
        "make_demo_data": ([py, SCRIPTS / "make_demo_data.py", "--out", w / "o", "--snr-db", "nan"], "snr_db"),
        "prepare_brain_tumor": ([py, SCRIPTS / "prepare_brain_tumor.py", "--src", w / "empty dir", "--out", w / "b"],
                                "empty dir"),
        "prepare_fastmri": ([py, SCRIPTS / "prepare_fastmri.py", "--src", w / "nope", "--out", w / "k"], "nope"),
        "prepare_natural": ([py, SCRIPTS / "prepare_natural.py", "--out", w / "n", "--skip-flickr2k", "--set5-src",
                             w / "nope"], "nope"),
        "train": ([py, "-m", "kdmri_lib.engine.train", "student", "--data", w / "empty dir", "--out", w / "r"], "empty dir"),
        "reconstruct": ([py, "-m", "kdmri_lib.engine.reconstruct", "--checkpoint", w / "random.pt", "--data", demo_dir, "--out",
                         w / "rec"], "random.pt"),
        "benchmark": ([py, "-m", "kdmri_lib.experiments.benchmark", "--out", w / "p", "--tasks", "sr5"], "sr scale"),
        "ablation": ([py, "-m", "kdmri_lib.experiments.ablation", "--out", w / "ablation out", "--data", demo_dir, "--rows",
                      "bogus"], "bogus"),
        "notebook": ([py, "-m", "kdmri_lib.teaching.notebook_runner", "--out", w / "nb", "--only", "99_bogus"], "99_bogus"),
    }
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    procs = {k: subprocess.Popen([str(a) for a in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (cmd, _) in cases.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=180)
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        assert p.returncode == 2 and "Traceback" not in err and len(lines) == 1, f"{k}: {p.returncode}\n{err}"
        assert cases[k][1] in lines[0], f"{k}: {lines[0]}"
    assert sorted(p.name for p in w.iterdir()) == ["empty dir", "random.pt"]   # nothing created on the way


def test_ablation_bad_input_creates_no_folder(tmp_path, demo_dir, capsys):
    from kdmri_lib.experiments import ablation

    assert ablation.main(["--out", str(tmp_path / "out"), "--data", str(demo_dir), "--rows", "bogus"]) == 2
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# 6. notebook parameters: kdmri_lib.teaching.notebook._validate / setup
# --------------------------------------------------------------------------------------------

NB_PARAMS = {
    "epochs=0": ({"epochs": 0}, "'epochs' must be >= 1"),
    "epochs=-1": ({"epochs": -1}, "'epochs' must be >= 1"),
    "epochs='10'": ({"epochs": "10"}, "'epochs' must be an integer; got '10'"),
    "epochs=2.5": ({"epochs": 2.5}, "'epochs' must be an integer; got 2.5"),
    "epochs=None": ({"epochs": None}, "'epochs' must be an integer >= 1; got None"),
    "epochs=True": ({"epochs": True}, "'epochs' must be an integer; got True"),
    "teacher_epochs=-1": ({"teacher_epochs": -1}, "'teacher_epochs' must be >= 0"),
    "batch_size=0": ({"batch_size": 0}, "'batch_size' must be >= 1"),
    "batch_size=2.5": ({"batch_size": 2.5}, "'batch_size' must be an integer"),
    "batch_size=[8]": ({"batch_size": [8]}, "'batch_size' must be an integer"),
    "patch_size=64": ({"patch_size": 64}, "patch_size=64: training on patches is not supported"),
    "patch_size=8 scale=4": ({"task": "sr", "scale": 4, "patch_size": 8}, "patch_size=8: .*every sample is the measurement of a whole slice"),
    "steps_per_epoch=0": ({"steps_per_epoch": 0}, "'steps_per_epoch' must be >= 1"),
    "val_slices=0": ({"val_slices": 0}, "'val_slices' must be >= 1"),
    "scale=5": ({"scale": 5}, "'scale' must be one of 2, 3, 4, 8"),
    "scale=None": ({"scale": None}, "'scale' must be an integer"),
    "acceleration=0": ({"acceleration": 0}, "'acceleration' must be >= 1"),
    "task='mri'": ({"task": "mri"}, "'task' must be one of 'sr', 'cs'"),
    "task=None": ({"task": None}, "'task' must be one of"),
    "preset='huge'": ({"preset": "huge"}, "'preset' must be one of"),
    "teacher_preset='large'": ({"teacher_preset": "large"}, "'teacher_preset' must be one of"),
    "ablation_preset=None": ({"ablation_preset": None}, "'ablation_preset' must be one of"),
    "device='tpu'": ({"device": "tpu"}, "'device' must be one of"),
    "device=0": ({"device": 0}, "'device' must be one of"),
    "lr=0": ({"lr": 0}, "'lr' must be > 0"),
    "lr='1e-3'": ({"lr": "1e-3"}, "'lr' must be a number"),
    "lr=nan": ({"lr": float("nan")}, "'lr' must be finite"),
    "lr=-1": ({"lr": -1}, "'lr' must be > 0"),
    "teacher_lr=-1": ({"teacher_lr": -1.0}, "'teacher_lr' must be > 0"),
    "center_fraction=1.5": ({"center_fraction": 1.5}, "'center_fraction' must be <= 1"),
    "seed=-1": ({"seed": -1}, "'seed' must be >= 0"),
    "seed='0'": ({"seed": "0"}, "'seed' must be an integer"),
    "seed=None": ({"seed": None}, "'seed' must be an integer"),
    "mask_type='radial'": ({"mask_type": "radial"}, "'mask_type' must be one of"),
    "confidence='maybe'": ({"confidence": "maybe"}, "'confidence' must be one of 'none', 'hard', 'soft'"),
    "correction='yes'": ({"correction": "yes"}, "'correction' must be True or False"),
    "profile_latency=1": ({"profile_latency": 1}, "'profile_latency' must be True or False"),
    "run_ablation=None": ({"run_ablation": None}, "'run_ablation' must be True or False"),
    "volume='../x.h5'": ({"volume": "../x.h5"}, "'volume' must be None or the name of a file"),
    "volume=3": ({"volume": 3}, "'volume' must be None or the name"),
    "slice_num=-1": ({"slice_num": -1}, "'slice_num' must be >= 0"),
    "ablation_epochs=0": ({"ablation_epochs": 0}, "'ablation_epochs' must be >= 1"),
    "data_dir=None": ({"data_dir": None}, "'data_dir' must be a path"),
    "data_dir=''": ({"data_dir": ""}, "'data_dir' must be a path"),
    "run_dir=5": ({"run_dir": 5}, "'run_dir' must be a path"),
}
NB_SETUP = {
    # id: (namespace maker(tmp, demo) -> dict, message)
    "data_dir is a file": (lambda t, d: {"data_dir": str(t / "a file.txt")}, "'data_dir': .* is a file"),
    "data_dir is an unrelated folder": (lambda t, d: {"data_dir": str(t / "my thesis")}, "holds no fastMRI data .* not empty"),
    "run_dir is a file": (lambda t, d: {"data_dir": str(d), "run_dir": str(t / "a file.txt")}, "'run_dir': .* is a file"),
    "run_dir under a file": (lambda t, d: {"data_dir": str(d), "run_dir": str(t / "a file.txt" / "runs")}, "is a file"),
    "device cuda:7": (lambda t, d: {"data_dir": str(d), "device": "cuda:7"}, "notebook parameter 'device': device 'cuda:7'"),
    "no data and build_data=False": (lambda t, d: {"data_dir": str(t / "new folder"), "_build": False},
                                     "holds no singlecoil_train/"),
}
declare("notebook parameters", list(NB_PARAMS) + list(NB_SETUP))


@pytest.mark.parametrize("case", list(NB_PARAMS), ids=list(NB_PARAMS))
def test_notebook_parameter_bad_value(case):
    from kdmri_lib.teaching.notebook import _validate

    params, match = NB_PARAMS[case]
    with pytest.raises(ConfigError, match=f"notebook parameter {match}"):
        _validate(params)
    record("notebook parameters", case)


@pytest.mark.parametrize("case", list(NB_SETUP), ids=list(NB_SETUP))
def test_notebook_setup_bad_folder(case, tmp_path, demo_dir):
    from kdmri_lib.teaching.notebook import setup

    t = tmp_path / UNI
    t.mkdir()
    (t / "a file.txt").write_text("x")
    (t / "my thesis").mkdir()
    (t / "my thesis" / "chapter 1.tex").write_text("important")
    ns = NB_SETUP[case][0](t, demo_dir)
    build = ns.pop("_build", True)
    ns.setdefault("run_dir", str(t / "runs"))
    before, demo_before = snapshot(t), stat_snapshot(demo_dir)
    with pytest.raises(ConfigError, match=NB_SETUP[case][1]):
        setup(ns, "test", build_data=build, quiet=True)
    assert_unchanged(before, snapshot(t))
    assert not (t / "my thesis" / "singlecoil_train").exists()
    assert_unchanged(demo_before, stat_snapshot(demo_dir))
    record("notebook parameters", case)


def test_notebook_parameters_that_are_fine(tmp_path, demo_dir):
    """Not errors: whole floats for integers (YAML), None where it means 'all' / 'one pass', a split folder."""
    from kdmri_lib.teaching.notebook import _validate, setup

    p = _validate({"epochs": 4.0, "steps_per_epoch": None, "val_slices": None, "patch_size": None, "teacher_lr": None,
                   "volume": None, "lr": 1, "device": "CPU", "center_fraction": None, "unknown_knob": object})
    assert p["epochs"] == 4 and isinstance(p["epochs"], int) and p["lr"] == 1.0
    ctx = setup({"data_dir": str(demo_dir / "singlecoil_val"), "run_dir": str(tmp_path / f"runs {UNI}")}, "t", quiet=True)
    assert ctx.data_dir == demo_dir / "singlecoil_val" and (tmp_path / f"runs {UNI}").is_dir()


# --------------------------------------------------------------------------------------------
# 7. unicode and spaces in paths: everything works, and messages name such paths intact
# --------------------------------------------------------------------------------------------

def test_unicode_and_spaces_in_every_path(tmp_path, capsys):
    """Demo builder (CLI), datasets, training CLI, checkpoints, reconstruction CLI with fastMRI's
    evaluate, all under ``data dir ü ñ/`` and friends."""
    from kdmri_lib.engine import reconstruct as R
    from kdmri_lib.engine import train as T

    root = tmp_path / "data dir ü ñ"
    data = root / "démo 1"
    assert _script("make_demo_data").main(["--out", str(data), "--stride", "15", "--no-natural", "--quiet"]) == 0
    ds = D.build_dataset(data, "val", "cs", 4)
    assert len(ds) > 0 and ds[0]["y"].dtype == torch.complex64
    out = root / "rüns 1" / "stüdent"
    code = T.main(["student", "--data", str(data), "--out", str(out), *TRAIN])
    assert code == 0, capsys.readouterr().err
    model, ck = load_model(out / "last.pt", expect={"kind": "student", "task": "sr", "factor": 4})
    rec = root / "recons ü"
    assert R.main(["--checkpoint", str(out / "best.pt"), "--data", str(data), "--out", str(rec), "--evaluate",
                   "--no-progress", *CPU]) == 0
    assert "fastMRI evaluate" in capsys.readouterr().out
    assert sorted(p.name for p in rec.iterdir()) == sorted(p.name for p in (data / "singlecoil_val").iterdir())
    with pytest.raises(DataError, match="nöwhere ü/x"):
        D.MRISliceDataset(root / "nöwhere ü" / "x", "sr", 4)
