"""Real data sets: fastMRI knee, Brain tumor MRI, Flickr2K / Set5, and the downloader.

Everything runs on tiny synthetic archives with the exact layouts of the real ones (built here),
served from an HTTP server on 127.0.0.1 where a download is involved. The scripts in
``data_scripts/`` are run end to end through their ``main(argv)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from kdmri_lib.core.errors import DataError
from kdmri_lib.datasets.data import MRISliceDataset, NaturalImageDataset, batch_operator, build_dataset
from kdmri_lib.datasets.demo_natural import to_luma
from kdmri_lib.datasets.real_data import _common, brain_tumor, fastmri_knee, natural
from kdmri_lib.datasets.real_data import http_download as dl
from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import ismrmrd_header, write_volume
from kdmri_lib.mri.kspace_sim import simulate_volume

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "data_scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_kdmri_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------
# HTTP server on 127.0.0.1 with Range support, connection drops and a Range-ignoring mode
# ------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    drop_once: set = set()      # paths whose next response stops halfway
    ignore_range: set = set()   # paths served whole even when a Range is asked

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        type(self).log.append((path, rng))
        data = self.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and path not in self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path in self.drop_once:
            self.drop_once.discard(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    _Handler.files, _Handler.log, _Handler.drop_once, _Handler.ignore_range = {}, [], set(), set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    old = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)


# ------------------------------------------------------------------------------------------
# Downloader
# ------------------------------------------------------------------------------------------

def test_download_verifies_and_skips_second_time(server, tmp_path):
    base, h = server
    data = os.urandom(300_000)
    h.files["/a.bin"] = data
    dest = dl.download(f"{base}/a.bin", tmp_path / "a.bin", _sha(data), progress=False)
    assert dest.read_bytes() == data and not (tmp_path / "a.bin.part").exists()
    n = len(h.log)
    dl.download(f"{base}/a.bin", tmp_path / "a.bin", _sha(data), progress=False)
    assert len(h.log) == n  # nothing requested the second time


def test_download_checksum_mismatch_removes_partial(server, tmp_path):
    base, h = server
    h.files["/b.bin"] = b"x" * 5000
    wrong = "0" * 64
    with pytest.raises(DataError) as e:
        dl.download(f"{base}/b.bin", tmp_path / "b.bin", wrong, progress=False)
    msg = str(e.value)
    assert f"{base}/b.bin" in msg and wrong in msg and _sha(b"x" * 5000) in msg
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()


def test_download_interrupted_then_resumed(server, tmp_path):
    base, h = server
    data = os.urandom(200_000)
    h.files["/c.bin"] = data
    h.drop_once.add("/c.bin")
    with pytest.raises(DataError, match="run the same command again to resume"):
        dl.download(f"{base}/c.bin", tmp_path / "c.bin", _sha(data), progress=False, retries=0)
    part = tmp_path / "c.bin.part"
    assert part.stat().st_size == len(data) // 2 and not (tmp_path / "c.bin").exists()
    dl.download(f"{base}/c.bin", tmp_path / "c.bin", _sha(data), progress=False, retries=0)
    assert (tmp_path / "c.bin").read_bytes() == data
    assert h.log[-1] == ("/c.bin", f"bytes={len(data) // 2}-")  # only the rest was asked for
    # a drop inside one call is resumed automatically
    h.files["/d.bin"] = data
    h.drop_once.add("/d.bin")
    dl.download(f"{base}/d.bin", tmp_path / "d.bin", _sha(data), progress=False, retries=2)
    assert (tmp_path / "d.bin").read_bytes() == data
    assert [r for p, r in h.log if p == "/d.bin"] == [None, f"bytes={len(data) // 2}-"]


def test_download_server_ignoring_range_restarts(server, tmp_path):
    base, h = server
    data = os.urandom(100_000)
    h.files["/e.bin"] = data
    h.ignore_range.add("/e.bin")
    (tmp_path / "e.bin.part").write_bytes(data[:30_000])
    dl.download(f"{base}/e.bin", tmp_path / "e.bin", _sha(data), progress=False)
    assert (tmp_path / "e.bin").read_bytes() == data
    with pytest.raises(DataError, match="HTTP 404"):
        dl.download(f"{base}/missing.bin", tmp_path / "m.bin", None, progress=False)


# ------------------------------------------------------------------------------------------
# fastMRI single-coil knee
# ------------------------------------------------------------------------------------------

KH, KW, REC = 640, 368, 320


def _knee_file(path: Path, seed: int, slices: int = 2, acquisition: str = "CORPD_FBK", test: bool = False) -> None:
    """A fastMRI-like single-coil knee volume: 640 x 368 k-space (readout oversampled), 320 x 320 target."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:KH, :KW]
    imgs = []
    for s in range(slices):
        a, b = 140 + 10 * s + rng.integers(0, 10), 170
        obj = (((y - KH / 2) / a) ** 2 + ((x - KW / 2) / b) ** 2 < 1).astype(np.float32)
        obj *= 1 + 0.3 * np.sin(x / (7 + s)) * np.cos(y / 11)
        phase = 0.002 * (x - KW / 2) + 0.001 * (y - KH / 2)
        imgs.append(obj * np.exp(1j * phase))
    img = torch.from_numpy(np.stack(imgs).astype(np.complex64))
    kspace = physics.fft2c(img).numpy()
    target = physics.centre_crop(physics.ifft2c(torch.from_numpy(kspace)).abs(), (REC, REC)).numpy()
    header = ismrmrd_header((KH, KW, 1), (REC, REC, 1), fov_mm=(280.0, 140.0, 4.5))
    attrs = {"acquisition": acquisition, "patient_id": f"p{seed:04d}"}
    if test:
        mask = np.zeros(KW, dtype=bool)
        mask[::4] = True
        mask[KW // 2 - 15: KW // 2 + 15] = True
        write_volume(path, kspace * mask, None, {**attrs, "acceleration": 4}, header=header)
        with h5py.File(path, "a") as hf:
            hf.create_dataset("mask", data=mask)
    else:
        write_volume(path, kspace, target, attrs, header=header)


@pytest.fixture(scope="module")
def knee_src(tmp_path_factory):
    """Official-like archives: train (.tar.gz, one truncated h5 inside), val (.tar.xz), test (.tar)."""
    d = tmp_path_factory.mktemp("knee_src")
    files = d / "files"
    for split, names in (("train", ["file1000001", "file1000002", "file1000003"]), ("val", ["file1000100"]),
                         ("test", ["file1000200_v2"])):
        (files / split).mkdir(parents=True)
        for i, n in enumerate(names):
            _knee_file(files / split / f"{n}.h5", seed=hash(n) % 1000, acquisition=("CORPD_FBK", "CORPDFS_FBK")[i % 2],
                       test=split == "test")
    bad = files / "train" / "file1000003.h5"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # truncated: a corrupt file inside the archive
    arch = d / "archives"
    arch.mkdir()
    with tarfile.open(arch / "knee_singlecoil_train.tar.gz", "w:gz", compresslevel=1) as tf:
        for p in sorted((files / "train").iterdir()):
            tf.add(p, arcname=f"singlecoil_train/{p.name}")
    with tarfile.open(arch / "knee_singlecoil_val.tar.xz", "w:xz", preset=0) as tf:
        tf.add(files / "val" / "file1000100.h5", arcname="knee_singlecoil_val/file1000100.h5")
    with tarfile.open(arch / "knee_singlecoil_test_v2.tar", "w") as tf:
        tf.add(files / "test" / "file1000200_v2.h5", arcname="singlecoil_test_v2/file1000200_v2.h5")
    return d


@pytest.fixture(scope="module")
def knee_out(knee_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("knee") / "knee"
    script = _script("prepare_fastmri")
    assert script.main(["--src", str(knee_src / "archives"), "--out", str(out), "--quiet"]) == 0
    return out


def test_fastmri_archives_end_to_end(knee_out, knee_src, capsys):
    out = knee_out
    assert sorted(p.name for p in (out / "singlecoil_train").iterdir()) == ["file1000001.h5", "file1000002.h5"]
    assert [p.name for p in (out / "singlecoil_val").iterdir()] == ["file1000100.h5"]
    assert [p.name for p in (out / "singlecoil_test").iterdir()] == ["file1000200_v2.h5"]
    import pandas as pd

    idx = pd.read_csv(out / "fastmri_index.csv")
    assert list(idx.columns[:6]) == ["split", "file", "slices", "matrix", "recon", "acquisition"]
    assert set(idx["file"]) == {"file1000001.h5", "file1000002.h5", "file1000100.h5", "file1000200_v2.h5"}
    assert set(idx["matrix"]) == {"640x368"} and set(idx["recon"]) == {"320x320"}
    assert set(idx["acquisition"]) <= {"CORPD_FBK", "CORPDFS_FBK"} and (idx["slices"] == 2).all()
    assert (idx.loc[idx.split != "test", "esc_nmse"] < 1e-6).all()
    corrupt = (out / "corrupt.txt").read_text()
    assert "train/file1000003.h5" in corrupt and "truncated" in corrupt
    assert not (out / ".partial").exists()

    # second run: nothing to do, nothing touched
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    script = _script("prepare_fastmri")
    capsys.readouterr()
    assert script.main(["--src", str(knee_src / "archives"), "--out", str(out), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_fastmri_outputs_load_in_fastmri_and_toolkit(knee_out):
    from fastmri.data import SliceDataset

    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        ds = SliceDataset(knee_out / f"singlecoil_{split}", challenge="singlecoil")
        assert len(ds) == n
        kspace, mask, target, attrs, fname, _ = ds[0]
        assert kspace.shape == (KH, KW) and attrs["recon_size"][:2] == (REC, REC)
        assert (target is None) == (split == "test") and (mask is not None) == (split == "test")

    # sr: k-space of the 320 x 320 image
    sr = build_dataset(knee_out, "val", "sr", 2)
    s = sr[0]
    assert s["y"].shape == (1, 160, 160) and s["initial"].shape == (1, 160, 160) and s["target"].shape == (1, REC, REC)

    # cs: the raw 640 x 368 k-space, masked; start image = fastMRI's zero-filled, centre-cropped image
    cs = build_dataset(knee_out, "val", "cs", 4)
    s = cs[1]
    assert s["y"].shape == (1, KH, KW) and s["initial"].shape == (1, REC, REC) and s["mask"].shape == (1, 1, KW)
    with h5py.File(knee_out / "singlecoil_val" / "file1000100.h5") as hf:
        k = torch.from_numpy(hf["kspace"][1])
        t = torch.from_numpy(hf["reconstruction_esc"][1])
    from fastmri.data import subsample

    fm_mask, _ = subsample.RandomMaskFunc([0.08], [4])((1, KW, 1), seed=tuple(map(ord, "file1000100.h5")))
    assert torch.equal(s["mask"].reshape(-1), fm_mask.reshape(-1).float())  # fastMRI's own validation mask
    zf = physics.centre_crop(physics.ifft2c(k * s["mask"].reshape(-1)), (REC, REC))
    torch.testing.assert_close(s["initial"][0] * s["scale"], zf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s["y"][0] * s["scale"], k * s["mask"].reshape(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["target"][0] * s["scale"], t, rtol=1e-5, atol=1e-5)

    # a collated batch rebuilds the cropped operator; data consistency with the measured samples
    batch = torch.utils.data.default_collate([cs[0], cs[1]])
    op = batch_operator(batch, "cs", 4)
    assert isinstance(op, physics.CroppedCartesianMask) and op.kspace_shape == (KH, KW)
    torch.testing.assert_close(op.initial(batch["y"]), batch["initial"], rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 1, REC, REC, dtype=torch.complex64)
    yy = torch.randn(2, 1, KH, KW, dtype=torch.complex64)
    lhs, rhs = torch.vdot(op(x).flatten(), yy.flatten()), torch.vdot(x.flatten(), op.adjoint(yy).flatten())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)

    # cs training samples: whole slices, the raw k-space masked as measured, random masks
    tr = MRISliceDataset(knee_out / "singlecoil_train", "cs", 4, train_masks=True)
    s = tr[0]
    assert s["y"].shape == (1, KH, KW) and s["mask"].shape == (1, 1, KW) and s["target"].shape == (1, REC, REC)


def test_fastmri_extracted_folder_is_linked_not_copied(knee_src, tmp_path):
    ext = tmp_path / "extracted"
    for a in ("knee_singlecoil_train.tar.gz", "knee_singlecoil_val.tar.xz"):
        with tarfile.open(knee_src / "archives" / a) as tf:
            tf.extractall(ext, filter="data")
    out = tmp_path / "out"
    rep = fastmri_knee.prepare_fastmri(ext, out, progress=False, log=lambda m: None)
    src_file = ext / "singlecoil_train" / "file1000001.h5"
    dst_file = out / "singlecoil_train" / "file1000001.h5"
    assert os.path.samefile(src_file, dst_file) and rep.counts["hard-linked"] == 3
    assert [c["file"] for c in rep.corrupt] == ["file1000003.h5"]
    assert not (out / "singlecoil_train" / "file1000003.h5").exists() and (ext / "singlecoil_train" / "file1000003.h5").exists()
    assert not fastmri_knee.prepare_fastmri(ext, out, progress=False).worked
    # symlinks on request; the output still loads
    out2 = tmp_path / "out2"
    fastmri_knee.prepare_fastmri(ext / "knee_singlecoil_val", out2, fastmri_knee.FastMRIConfig(link="symlink"), progress=False)
    assert (out2 / "singlecoil_val" / "file1000100.h5").is_symlink()
    assert len(MRISliceDataset(out2 / "singlecoil_val", "sr", 4)) == 2
    # asking for the full check later re-checks the files in place, once
    full = fastmri_knee.FastMRIConfig(full_check=True, link="symlink")
    assert fastmri_knee.prepare_fastmri(ext / "knee_singlecoil_val", out2, full, progress=False).worked
    assert not fastmri_knee.prepare_fastmri(ext / "knee_singlecoil_val", out2, full, progress=False).worked
    with pytest.raises(DataError, match="the source folder is the output folder"):
        fastmri_knee.prepare_fastmri(out / "singlecoil_train", out, progress=False)


def test_fastmri_truncated_archive_keeps_good_files_and_sample_rate(knee_src, tmp_path):
    full = knee_src / "archives" / "knee_singlecoil_train.tar.gz"
    cut = tmp_path / "dl" / "knee_singlecoil_train.tar.gz"
    cut.parent.mkdir()
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.55)])
    out = tmp_path / "out"
    with pytest.raises(DataError, match="truncated or corrupt"):
        fastmri_knee.prepare_fastmri(cut, out, progress=False)
    assert (out / "singlecoil_train" / "file1000001.h5").exists()  # the files before the cut are kept
    assert "file1000001.h5" in (out / "fastmri_index.csv").read_text()
    rep = fastmri_knee.prepare_fastmri(full, out, progress=False)
    assert rep.counts["kept"] == 1 and rep.counts["extracted"] == 1
    # a volume sample rate removes the files it no longer selects
    names = ["file1000001.h5", "file1000002.h5"]
    rate = 0.5
    keep = [n for n in names if fastmri_knee.selected(n, rate)]
    rep = fastmri_knee.prepare_fastmri(full, out, fastmri_knee.FastMRIConfig(sample_rate=rate), progress=False)
    assert sorted(p.name for p in (out / "singlecoil_train").iterdir()) == keep
    assert len(rep.removed) == 2 - len(keep)


def test_verify_knee_file_errors(tmp_path):
    p = tmp_path / "singlecoil_val" / "x.h5"
    p.parent.mkdir()
    k = np.zeros((1, 64, 48), np.complex64)
    write_volume(p, k, np.zeros((1, 30, 30), np.float32), {"acquisition": "CORPD_FBK"},
                 header=ismrmrd_header((64, 48, 1), (32, 32, 1)))
    with pytest.raises(DataError, match="recon size is 32x32"):
        fastmri_knee.verify_knee_file(p, "val")
    with pytest.raises(DataError, match="no fastMRI single-coil knee data"):
        (tmp_path / "downloads").mkdir()
        fastmri_knee.find_sources([tmp_path / "downloads"])
    (tmp_path / "knee_multicoil_train.tar.xz").touch()
    with pytest.raises(DataError, match="multi-coil data are not supported"):
        fastmri_knee.find_sources([tmp_path / "knee_multicoil_train.tar.xz"])
    assert fastmri_knee.split_of("knee_singlecoil_test_v2.tar.gz") == "test"
    assert fastmri_knee.split_of("singlecoil_train") == "train" and fastmri_knee.split_of("knee_multicoil_val") is None


# ------------------------------------------------------------------------------------------
# Brain tumor MRI (Kaggle layout)
# ------------------------------------------------------------------------------------------

def _jpeg(rng, shape, rgb: bool) -> bytes:
    H, W = shape
    y, x = np.mgrid[:H, :W]
    img = ((((y - H / 2) / (H / 2.5)) ** 2 + ((x - W / 2) / (W / 2.5)) ** 2) < 1) * (150 + 80 * rng.random((H, W)))
    img = img.astype(np.uint8)
    im = Image.fromarray(np.stack([img, img, img], -1) if rgb else img)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def brain_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("brain_src")
    rng = np.random.default_rng(0)
    zpath = d / "archive.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for split, prefix, n in (("Training", "Tr", 3), ("Testing", "Te", 2)):
            for cls in brain_tumor.CLASSES:
                for i in range(n):
                    shape = (40, 40) if i % 2 == 0 else (48, 36)
                    z.writestr(f"{split}/{cls}/{prefix}-{cls[:2]}_{i:04d}.jpg", _jpeg(rng, shape, rgb=i == 1))
        z.writestr("Training/glioma/Tr-gl_9999.jpg", b"not a jpeg at all")  # unreadable: replaced
        z.writestr("Training/glioma/Thumbs.db", b"\0\0")                    # not an image: ignored
    return zpath


SMALL_BT = ["--n-train", "8", "--n-test-per-class", "1", "--matrix", "32", "--quiet"]


def test_brain_tumor_download_end_to_end(server, brain_zip, tmp_path, capsys):
    base, h = server
    data = brain_zip.read_bytes()
    h.files["/kaggle/archive.zip"] = data
    out = tmp_path / "brain"
    script = _script("prepare_brain_tumor")
    argv = ["--url", f"{base}/kaggle/archive.zip", "--sha256", _sha(data), "--out", str(out), *SMALL_BT]
    assert script.main(argv) == 0
    train = sorted(p.name for p in (out / "singlecoil_train").iterdir())
    val = sorted(p.name for p in (out / "singlecoil_val").iterdir())
    assert len(train) == 8 and len(val) == 4
    assert {n.split("_")[0] for n in val} == set(brain_tumor.CLASSES)
    assert all(sum(n.startswith(c) for n in train) == 2 for c in brain_tumor.CLASSES)

    # same k-space simulation as the demo data, reproducible from the source image
    f = out / "singlecoil_train" / train[0]
    with h5py.File(f) as hf:
        src = hf.attrs["source_image"]
        kspace, target = hf["kspace"][()], hf["reconstruction_esc"][()]
        sigma, snr = hf.attrs["noise_std"], hf.attrs["snr_db"]
    with zipfile.ZipFile(brain_zip) as z:
        img = brain_tumor.square_resize(_common.load_luma(z.read(src), src), 32)
    k2, t2 = simulate_volume([img], brain_tumor._image_rng(0, src), sigma, 1.5)
    assert kspace.shape == (1, 32, 32) and snr == 40.0
    np.testing.assert_array_equal(kspace, k2)
    np.testing.assert_array_equal(target, t2)

    # loads in fastMRI and in the training dataset, both tasks
    from fastmri.data import SliceDataset

    assert len(SliceDataset(out / "singlecoil_val", challenge="singlecoil")) == 4
    s = build_dataset(out, "train", "sr", 2)[0]
    assert s["y"].shape == (1, 16, 16) and s["target"].shape == (1, 32, 32)
    s = build_dataset(out, "val", "cs", 4)[0]
    assert s["y"].shape == (1, 32, 32) and s["mask"].shape == (1, 1, 32)

    # second run: nothing downloaded, nothing written
    n = len(h.log)
    capsys.readouterr()
    assert script.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out and len(h.log) == n

    # the extracted folder gives the same split and the same files
    ext = tmp_path / "ext"
    with zipfile.ZipFile(brain_zip) as z:
        z.extractall(ext / "brain-tumor-mri-dataset")
    out2 = tmp_path / "brain2"
    cfg = brain_tumor.BrainTumorConfig(n_train=8, n_test_per_class=1, matrix=32)
    rep = brain_tumor.prepare_brain_tumor(ext, out2, cfg, progress=False)
    assert sorted(p.name for p in (out2 / "singlecoil_train").iterdir()) == train
    with h5py.File(out2 / "singlecoil_train" / train[0]) as hf:
        np.testing.assert_array_equal(hf["kspace"][()], kspace)
    assert rep.worked and rep.written == 12


def test_brain_tumor_defaults_and_errors(brain_zip, tmp_path):
    cfg = brain_tumor.BrainTumorConfig()
    assert (cfg.n_train, cfg.n_test_per_class, cfg.matrix) == (400, 5, 256)
    assert sum(cfg.per_class("train").values()) == 400 and set(cfg.per_class("test").values()) == {5}
    with pytest.raises(DataError, match="6 needed"):  # 3 glioma training images (+1 unreadable) < 6
        brain_tumor.prepare_brain_tumor(brain_zip, tmp_path / "b", brain_tumor.BrainTumorConfig(n_train=24, matrix=32),
                                        progress=False)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("images/a.jpg", b"")
    with pytest.raises(DataError, match="not the Kaggle Brain Tumor MRI layout"):
        brain_tumor.prepare_brain_tumor(bad, tmp_path / "b2", progress=False)


# ------------------------------------------------------------------------------------------
# Flickr2K and Set5
# ------------------------------------------------------------------------------------------

def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def natural_archives(tmp_path_factory):
    d = tmp_path_factory.mktemp("natural_src")
    rng = np.random.default_rng(1)
    imgs = {}
    with tarfile.open(d / "Flickr2K.tar", "w") as tf:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for i in range(1, 7):
            a = rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8)
            imgs[f"{i:06d}"] = a
            add(f"Flickr2K/Flickr2K_HR/{i:06d}.png", _png(a))
            add(f"Flickr2K/Flickr2K_LR_bicubic/X2/{i:06d}x2.png", _png(a[::2, ::2]))
    with tarfile.open(d / "Set5.tar.gz", "w:gz") as tf:
        for name in ("baby", "bird", "butterfly", "head", "woman"):
            a = rng.integers(0, 256, (36, 34, 3), dtype=np.uint8)
            imgs[name] = a
            for folder in ("GTmod12", "original", "LRbicx4"):
                data = _png(a if folder != "LRbicx4" else a[::4, ::4])
                ti = tarfile.TarInfo(f"Set5/{folder}/{name}.png")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return d, imgs


def test_natural_download_end_to_end(server, natural_archives, tmp_path, capsys):
    base, h = server
    d, imgs = natural_archives
    flickr, set5 = (d / "Flickr2K.tar").read_bytes(), (d / "Set5.tar.gz").read_bytes()
    h.files["/Flickr2K.tar"], h.files["/Set5.tar.gz"] = flickr, set5
    out = tmp_path / "nat"
    script = _script("prepare_natural")
    argv = ["--out", str(out), "--flickr2k-url", f"{base}/Flickr2K.tar", "--flickr2k-sha256", _sha(flickr),
            "--set5-url", f"{base}/Set5.tar.gz", "--set5-sha256", _sha(set5), "--n-train", "4", "--quiet"]
    assert script.main(argv) == 0
    train = sorted(p.name for p in (out / "natural" / "train").iterdir())
    expected = natural.select_flickr2k([f"Flickr2K/Flickr2K_HR/{i:06d}.png" for i in range(1, 7)], 4, 0)
    assert train == [Path(e).name for e in expected]
    assert sorted(p.name for p in (out / "natural" / "set5").iterdir()) == \
        ["baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]
    # Y channel (BT.601), cropped to a multiple of 16
    got = np.asarray(Image.open(out / "natural" / "set5" / "bird.png"))
    y = to_luma(imgs["bird"])
    assert got.shape == (32, 32)
    np.testing.assert_array_equal(got, np.round(y[2:34, 1:33] * 255).astype(np.uint8))
    a = imgs[train[0][:-4]]
    assert np.asarray(Image.open(out / "natural" / "train" / train[0])).shape == (a.shape[0] // 16 * 16, 48)

    ds = NaturalImageDataset(out / "natural" / "set5", "sr", 2)
    assert len(ds) == 5 and ds[0]["target"].shape[-2:] == (32, 32)

    n = len(h.log)
    capsys.readouterr()
    assert script.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out and len(h.log) == n


def test_natural_without_checksum_is_refused_and_local_sources(server, natural_archives, tmp_path):
    base, h = server
    d, _ = natural_archives
    with pytest.raises(DataError, match="no SHA-256 checksum is known"):
        natural.prepare_natural(tmp_path / "n", ["set5"], progress=False)
    # explicitly unverified: downloads and reports the hash it got
    h.files["/u/Set5.tar.gz"] = data = (d / "Set5.tar.gz").read_bytes()
    msgs = []
    rep = natural.prepare_natural(tmp_path / "u", ["set5"], url={"set5": f"{base}/u/Set5.tar.gz"},
                                  allow_unverified=True, progress=False, log=msgs.append)
    assert rep.files == {"set5": 5} and any(_sha(data) in m and "not verified" in m for m in msgs)
    rep = natural.prepare_natural(tmp_path / "n", ["set5"], src={"set5": d / "Set5.tar.gz"}, progress=False)
    assert rep.files == {"set5": 5}
    with pytest.raises(DataError, match="already holds the embedded demo data"):
        (tmp_path / "demo").mkdir()
        (tmp_path / "demo" / "manifest.json").write_text("{}")
        natural.prepare_natural(tmp_path / "demo", ["set5"], src={"set5": d / "Set5.tar.gz"}, progress=False)


def test_set5_and_flickr2k_layouts():
    srf = [f"Set5/image_SRF_{k}/img_00{i}_SRF_{k}_{t}.png" for k in (2, 4) for i in range(1, 6) for t in ("HR", "LR")]
    got = natural.select_set5(srf)
    assert got == [f"Set5/image_SRF_2/img_00{i}_SRF_2_HR.png" for i in range(1, 6)]
    assert natural.clean_name(got[0]) == "img_001.png"
    hf = [f"Set5_HR/{n}.png" for n in ("baby", "bird")] + ["Set5_LR_x4/baby.png"]
    assert natural.select_set5(hf) == hf[:2]
    flat = ["Set5/baby.png", "Set5/bird_GT.png", "Set5/LR/baby.png"]
    assert natural.select_set5(flat) == flat[:2] and natural.clean_name(flat[1]) == "bird.png"
    names = [f"DF/HR/{i:04d}.png" for i in range(10)] + [f"DF/LR/X4/{i:04d}x4.png" for i in range(10)]
    pick = natural.select_flickr2k(names, 3, seed=0)
    assert len(pick) == 3 and all("/HR/" in p for p in pick) and pick == natural.select_flickr2k(names, 3, seed=0)


# ------------------------------------------------------------------------------------------
# Scripts as programs
# ------------------------------------------------------------------------------------------

def test_scripts_help_and_errors(tmp_path, capsys):
    for name in ("prepare_fastmri", "prepare_brain_tumor", "prepare_natural"):
        with pytest.raises(SystemExit) as e:
            _script(name).main(["--help"])
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out
    assert _script("prepare_fastmri").main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(SCRIPTS / "prepare_natural.py"), "--list-sources"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "Flickr2K.tar" in r.stdout and "unknown" in r.stdout
