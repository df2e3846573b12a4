"""The bad-input corpus for the data loaders (MRISliceDataset, build_dataset, NaturalImageDataset,
load_slice, check_file): one clear error naming the input, no file changed (``tests/_corpus.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from _corpus import (  # the corpus's shared helpers
    UNI,
    _corrupt_object_headers,
    _corrupt_signature,
    _png,
    _truncated,
    _truncated_png,
    _with_values,
    _zeros,
    assert_unchanged,
    declare,
    good_volume,
    kspace,
    noise,
    raw_h5,
    read_all,
    record,
    snapshot,
)

from kdmri_lib.core.errors import ConfigError, DataError
from kdmri_lib.datasets import data as D
from kdmri_lib.engine.train import TrainConfig
from kdmri_lib.mri.fastmri_format import check_file, ismrmrd_header

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
