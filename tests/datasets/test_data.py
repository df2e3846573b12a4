"""Demo data builder, fastMRI-format files, datasets, and their errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset

from kdmri_lib.core.errors import ConfigError, DataError
from kdmri_lib.datasets import data
from kdmri_lib.datasets.demo_data import DemoConfig, build_demo_data
from kdmri_lib.mri import physics
from kdmri_lib.mri.fastmri_format import check_file, write_volume


def test_fastmri_slicedataset_loads_every_demo_file(demo_dir):
    for split in ("train", "val"):
        root = demo_dir / f"singlecoil_{split}"
        ds = SliceDataset(root, challenge="singlecoil")
        files = sorted(root.glob("*.h5"))
        assert files and {s[0].name for s in ds.raw_samples} == {f.name for f in files}
        n = 0
        for f in files:
            info = check_file(f, require_target=True, full=True)
            n += info["slices"]
            with h5py.File(f) as hf:
                assert hf["kspace"].dtype == np.complex64 and hf["kspace"].ndim == 3
                assert hf["reconstruction_esc"].dtype == np.float32
                assert set(hf.attrs) >= {"max", "norm", "acquisition", "patient_id"}
                assert hf.attrs["max"] == pytest.approx(hf["reconstruction_esc"][()].max())
                H, W = hf["kspace"].shape[1:]
                assert H % 16 == 0 and W % 16 == 0
        assert len(ds) == n
        kspace, mask, target, attrs, fname, sl = ds[0]
        assert target.shape == kspace.shape and attrs["encoding_size"][:2] == kspace.shape
        assert attrs["padding_left"] == 0 and attrs["padding_right"] == kspace.shape[1]


def test_demo_target_is_fully_sampled_magnitude_and_noise_matches_snr(demo_dir):
    f = sorted((demo_dir / "singlecoil_val").glob("*.h5"))[0]
    with h5py.File(f) as hf:
        k, t = hf["kspace"][()], hf["reconstruction_esc"][()]
        sigma, snr = hf.attrs["noise_std"], hf.attrs["snr_db"]
    img = physics.ifft2c(torch.from_numpy(k)).numpy()
    np.testing.assert_allclose(np.abs(img), t, atol=1e-5)
    # the image corners are background (only noise): its std matches the stated SNR's sigma
    corner = np.concatenate([img[:, :12, :12].ravel(), img[:, -12:, -12:].ravel()])
    assert np.std(corner) == pytest.approx(sigma, rel=0.15)
    fg = t[t > 0.1]
    assert 20 * np.log10(fg.mean() / sigma) == pytest.approx(snr, abs=3)


def test_demo_splits_share_no_slice_and_cover_three_orientations_and_two_contrasts(demo_dir):
    seen, split_of = {}, {}
    orient = set()
    for split in ("train", "val"):
        for f in (demo_dir / f"singlecoil_{split}").glob("*.h5"):
            with h5py.File(f) as hf:
                o, c = hf.attrs["orientation"], hf.attrs["contrast"]
                orient.add((split, o, c))
                for i in hf.attrs["slice_indices"]:
                    key = (c, o, int(i))
                    assert key not in seen, f"slice {key} in {seen.get(key)} and {f.name}"
                    seen[key] = f.name
                    # a validation position is never trained on, in any contrast
                    assert split_of.setdefault((o, int(i)), split) == split, (o, i)
    for split in ("train", "val"):
        assert {(o, c) for s, o, c in orient if s == split} == {(o, c) for o in ("axial", "coronal", "sagittal")
                                                               for c in ("T1w", "T2w")}


def test_whole_head_has_scalp_and_skull_in_both_contrasts():
    """The synthetic head: layers outside the brain in the order of a real head, with T1w / T2w
    intensities of their tissues (fat bright on T1w, bone dark in both, CSF bright on T2w)."""
    from kdmri_lib.datasets.head_model import LAYERS, build_head

    h = build_head(0)
    layer, t1, t2 = h["layer"], h["T1w"], h["T2w"]
    names = [n for n, *_ in LAYERS]
    mean = {n: (float(t1[layer == k + 2].mean()), float(t2[layer == k + 2].mean())) for k, n in enumerate(names)}
    assert all((layer == k + 2).sum() > 10_000 for k in range(len(names)))      # every layer is there
    assert mean["fat"][0] > 0.8 and mean["diploe"][0] > 0.5                        # fat and marrow bright (T1w)
    assert mean["inner_table"][0] < 0.05 and mean["outer_table"][1] < 0.05         # bone dark
    assert mean["csf"][1] > 0.9 > 0.2 > mean["csf"][0]                             # CSF: bright T2w, dark T1w
    brain = h["brain"]
    wm = t1 > 0.75                                                                 # T1w white matter
    assert float(t2[brain & wm].mean()) < float(t2[brain & (t1 > 0.3) & (t1 < 0.55)].mean())   # T2w: WM < GM
    # the layers are nested: distance from the brain grows with the layer index
    from scipy.ndimage import distance_transform_edt

    d = distance_transform_edt(~brain)
    med = [float(np.median(d[layer == k + 2])) for k in range(len(names))]
    assert med == sorted(med)


def test_heldout_real_scan_is_its_own_split(demo_dir):
    files = sorted((demo_dir / "singlecoil_heldout").glob("*.h5"))
    assert [f.name for f in files] == ["nibabel_example4d.h5"]
    assert not (demo_dir / "singlecoil_train" / files[0].name).exists()
    ds = data.MRISliceDataset(demo_dir / "singlecoil_heldout", "sr", 4)
    s = ds[0]
    assert len(ds) == 24 and s["target"].shape == (1, 96, 128) and s["y"].shape == (1, 24, 32)
    with h5py.File(files[0]) as hf:
        assert "nibabel" in hf.attrs["source"] and hf.attrs["contrast"] == "EPI"


def test_natural_images_and_set5_standin(demo_dir):
    train = sorted((demo_dir / "natural" / "train").glob("*.png"))
    set5 = sorted((demo_dir / "natural" / "set5").glob("*.png"))
    assert len(set5) == 5 and len(train) >= 10
    assert not {p.name for p in train} & {p.name for p in set5}
    ds = data.NaturalImageDataset(demo_dir / "natural" / "set5", "sr", 4)
    s = ds[0]
    assert s["target"].shape[-1] % 4 == 0 and s["y"].shape[-1] * 4 == s["target"].shape[-1]


def test_demo_builder_is_deterministic_and_idempotent(tmp_path):
    cfg = DemoConfig(stride=15, natural=False)
    a = build_demo_data(tmp_path / "a", cfg, progress=False)
    b = build_demo_data(tmp_path / "b", cfg, progress=False)
    assert a.built and b.built and a.files == b.files
    for split, names in a.files.items():
        for n in names:
            with h5py.File(tmp_path / "a" / f"singlecoil_{split}" / n) as fa, \
                    h5py.File(tmp_path / "b" / f"singlecoil_{split}" / n) as fb:
                assert np.array_equal(fa["kspace"][()], fb["kspace"][()])
                assert np.array_equal(fa["reconstruction_esc"][()], fb["reconstruction_esc"][()])
    f = next((tmp_path / "a" / "singlecoil_val").glob("*.h5"))
    # atomic writes leave nothing but .h5 files in a split folder, readable by others too
    assert all(p.suffix == ".h5" for p in (tmp_path / "a" / "singlecoil_val").iterdir())
    assert f.stat().st_mode & 0o044 == 0o044
    mtime = f.stat().st_mtime_ns
    again = build_demo_data(tmp_path / "a", cfg, progress=False)
    assert not again.built and f.stat().st_mtime_ns == mtime
    # a different seed gives different k-space
    build_demo_data(tmp_path / "c", DemoConfig(stride=15, natural=False, seed=1), progress=False)
    with h5py.File(tmp_path / "a" / "singlecoil_val" / f.name) as fa, h5py.File(tmp_path / "c" / "singlecoil_val" / f.name) as fc:
        assert not np.array_equal(fa["kspace"][()], fc["kspace"][()])
    # an interrupted build (a file missing) is completed by the next call
    f.unlink()
    redo = build_demo_data(tmp_path / "a", cfg, progress=False)
    assert redo.built and f.exists()


@pytest.mark.parametrize("task,factor", [("sr", 4), ("sr", 2), ("cs", 4), ("cs", 8)])
def test_dataset_samples_follow_the_physics(demo_dir, task, factor):
    ds = data.build_dataset(demo_dir, "val", task, factor)
    s = ds[0]
    H, W = s["target"].shape[-2:]
    op = data.batch_operator(torch.utils.data.default_collate([s]), task, factor)
    assert s["y"].shape == (1,) + tuple(op.meas_shape) and s["y"].dtype == torch.complex64
    assert torch.allclose(op.initial(s["y"][None])[0], s["initial"], atol=1e-6)
    # normalised: the starting image has maximum magnitude 1
    assert s["initial"].abs().max().item() == pytest.approx(1.0, rel=1e-5)
    # the measurement is the stored k-space, restricted and scaled
    f = demo_dir / "singlecoil_val" / s["fname"]
    with h5py.File(f) as hf:
        k = torch.from_numpy(hf["kspace"][s["slice_num"]])
    meas = op.forward(physics.ifft2c(k)[None, None])[0] / s["scale"]
    assert torch.allclose(meas, s["y"], atol=1e-5)
    # validation masks are fixed per volume (fastMRI's seed) and the same in every run
    if task == "cs":
        assert torch.equal(ds[0]["mask"], ds[1]["mask"])
        assert op.acceleration == pytest.approx(factor, rel=0.35)


def test_training_batches_masks_and_mixing(demo_dir):
    torch.manual_seed(0)
    ds = data.build_dataset(demo_dir, "train", "cs", 4, natural_dir=demo_dir / "natural" / "train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["target"].shape == (4, 1, 224, 224) and batch["mask"].shape == (4, 1, 1, 224)
    assert batch["fname"][0].endswith(".h5") and batch["fname"][1].endswith(".png")   # 1:1 mixing
    op = ds.operator(batch)
    assert op.mask.shape[0] == 4
    assert torch.allclose(op.initial(batch["y"]), batch["initial"], atol=1e-6)
    # training masks are random but reproducible from torch's seed
    torch.manual_seed(1)
    m1 = ds[0]["mask"]
    torch.manual_seed(1)
    assert torch.equal(ds[0]["mask"], m1)


# ---------------------------------------------------------------------------------------------
# training samples are what the scanner measures (whole slices; NumPy oracle)
# ---------------------------------------------------------------------------------------------

def _np_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))


def _np_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho"))


def _np_zero_filled(image: np.ndarray, task: str, factor: int, mask_cols=None) -> np.ndarray:
    """|A^H A x| of a whole complex slice, in NumPy: sr keeps the central H/s x W/s block of its
    k-space, cs the measured columns."""
    k = _np_fft2c(image)
    keep = np.zeros(k.shape, dtype=bool)
    if task == "sr":
        H, W = k.shape
        h, w = H // factor, W // factor
        keep[(H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w] = True
    else:
        keep[:, np.asarray(mask_cols, dtype=bool)] = True
    return np.abs(_np_ifft2c(np.where(keep, k, 0)))


def _region_psnr(img, ref, region, peak):
    mse = float(np.mean((img[region] - ref[region]) ** 2))
    return 10 * np.log10(peak ** 2 / mse)


@pytest.mark.parametrize("task,factor", [("sr", 4), ("sr", 2), ("cs", 4)])
def test_training_samples_are_whole_slice_measurements(demo_dir, task, factor):
    """The zero-filled image of every training sample has the PSNR of the whole-slice simulation,
    in the 8-pixel border as in the interior (a patch measured on its own wrapped around: 21.9 dB
    against 27.0 dB for the same regions, the error in the border). MRI slices and natural images."""
    from kdmri_lib.engine.train import TrainConfig, training_dataset

    torch.manual_seed(0)
    # the samples fit() trains on, with the run's defaults
    ds = training_dataset(TrainConfig(data_dir=str(demo_dir), task=task, factor=factor, natural=True).validate())
    mri = ds.a
    for i in (0, 1, 6, 7, 40, 41):          # even: MRI slices, odd: natural images
        s = ds[i]
        op = ds.operator(data.collate([s]))
        zf = op.adjoint(s["y"][None]).abs()[0, 0].numpy() * float(s["scale"])
        target = s["target"][0].numpy() * float(s["scale"])
        if i % 2 == 0:   # the oracle: the stored fully-sampled k-space of that slice, measured whole
            fname, slice_num, _ = mri.raw_samples[i // 2]
            with h5py.File(fname) as hf:
                image = _np_ifft2c(hf["kspace"][slice_num])
        else:            # a natural image is real: its whole-image measurement
            image = target.astype(np.complex64)
        assert s["target"].shape[-2:] == image.shape
        mask = s["mask"].reshape(-1).numpy() if task == "cs" else None
        oracle = _np_zero_filled(image, task, factor, mask)
        border = np.ones(image.shape, dtype=bool)
        border[8:-8, 8:-8] = False
        peak = float(target.max())
        for region in (border, ~border):
            got, want = _region_psnr(zf, target, region, peak), _region_psnr(oracle, target, region, peak)
            assert abs(got - want) < 0.3, (i, s["fname"], got, want)


def test_natural_images_have_the_mri_size_and_augment_reproducibly(demo_dir):
    nat = data.NaturalImageDataset(demo_dir / "natural" / "train", "sr", 4, size=(192, 160), augment=True)
    torch.manual_seed(3)
    a = nat[0]
    torch.manual_seed(3)
    b = nat[0]
    assert a["target"].shape == (1, 192, 160) and torch.equal(a["target"], b["target"])
    assert float(a["target"].min()) >= 0
    with pytest.raises(ConfigError, match="divisible by the sr scale 4"):
        data.NaturalImageDataset(demo_dir / "natural" / "train", "sr", 4, size=(190, 160))


def test_patch_size_is_a_clear_error():
    from kdmri_lib.engine.train import TrainConfig

    with pytest.raises(ConfigError, match="patch_size=64.*whole slice"):
        TrainConfig.from_dict({"patch_size": 64})
    assert TrainConfig.from_dict({"patch_size": None}).mode == "student"   # older configurations


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def _good_file(path: Path, kspace=None):
    k = kspace if kspace is not None else (np.random.randn(2, 32, 32) + 1j * np.random.randn(2, 32, 32)).astype(np.complex64)
    write_volume(path, k, np.abs(k).astype(np.float32), {"acquisition": "AXT1", "patient_id": "x"})
    return path


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        data.MRISliceDataset(tmp_path / "nope", "sr", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .h5 files"):
        data.MRISliceDataset(tmp_path / "empty", "sr", 4)
    with pytest.raises(DataError, match="no singlecoil_train"):
        data.build_dataset(tmp_path / "empty", "train", "sr", 4)


def test_missing_truncated_and_wrong_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        check_file(tmp_path / "missing.h5")
    good = _good_file(tmp_path / "good.h5")
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(DataError, match=r"trunc\.h5: not a readable HDF5 file"):
        check_file(trunc)
    with h5py.File(tmp_path / "nokspace.h5", "w") as hf:
        hf["foo"] = np.zeros(3)
    with pytest.raises(DataError, match=r"nokspace\.h5: no 'kspace' dataset"):
        check_file(tmp_path / "nokspace.h5")
    with h5py.File(tmp_path / "real.h5", "w") as hf:
        hf["kspace"] = np.zeros((2, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match=r"real\.h5: 'kspace' has dtype float32; expected complex64"):
        check_file(tmp_path / "real.h5")
    with h5py.File(tmp_path / "rank4.h5", "w") as hf:
        hf["kspace"] = np.zeros((2, 4, 8, 8), dtype=np.complex64)
    with pytest.raises(DataError, match="multi-coil"):
        check_file(tmp_path / "rank4.h5")


@pytest.mark.parametrize("bad", ["trunc", "nokspace", "real"])
def test_dataset_names_the_bad_file(tmp_path, bad):
    root = tmp_path / "d"
    root.mkdir()
    good = _good_file(root / "a.h5")
    if bad == "trunc":
        (root / "b.h5").write_bytes(good.read_bytes()[:1000])
    elif bad == "nokspace":
        with h5py.File(root / "b.h5", "w") as hf:
            hf["x"] = 1
    else:
        with h5py.File(root / "b.h5", "w") as hf:
            hf["kspace"] = np.zeros((1, 8, 8), dtype=np.float32)
    with pytest.raises(DataError, match=r"b\.h5"):
        data.MRISliceDataset(root, "cs", 4)
    assert good.exists() and check_file(good)  # nothing damaged


def test_non_h5_files_are_ignored(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    _good_file(root / "a.h5")
    (root / "README.txt").write_text("notes")
    (root / ".hidden.h5").write_text("junk")
    ds = data.MRISliceDataset(root, "cs", 4)
    assert len(ds) == 2


def test_scale_not_dividing_and_nan_and_zero_slices(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    k = (np.random.randn(1, 30, 30) + 1j * np.random.randn(1, 30, 30)).astype(np.complex64)
    _good_file(root / "odd.h5", k)
    with pytest.raises(DataError, match="not divisible by the sr scale 4"):
        data.MRISliceDataset(root, "sr", 4)[0]
    k[0, 3, 3] = np.nan
    _good_file(root / "odd.h5", k)
    with pytest.raises(DataError, match="NaN or Inf"):
        data.MRISliceDataset(root, "cs", 4)[0]
    _good_file(root / "odd.h5", np.zeros((1, 32, 32), dtype=np.complex64))
    with pytest.raises(DataError, match="all zeros"):
        data.MRISliceDataset(root, "cs", 4)[0]


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "mri"}, "task must be one of"),
    ({"factor": 0}, "must be >= 1"),
])
def test_dataset_parameter_errors(demo_dir, kwargs, match):
    args = dict(task="sr", factor=4) | kwargs
    with pytest.raises(ConfigError, match=match):
        data.MRISliceDataset(demo_dir / "singlecoil_val", **args)
