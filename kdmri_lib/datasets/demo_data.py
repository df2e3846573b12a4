"""The embedded demo data: fastMRI-format single-coil volumes from a real MRI template, offline.

Source: the MNI152 (ICBM 2009a, symmetric, 1 mm) T1 template that the ``nilearn`` wheel ships
(``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 197 x 233 x 189)
and its grey / white matter probability maps. The template is real anatomy (an average of 152
brains), available offline with no registration, but it is a skull-stripped *brain*, and a
scanner images the whole head. By default (``head="whole"``) the brain is wrapped in a synthetic
scalp and skull (CSF, inner table, marrow, outer table, galea, fat, skin, built in 3-D:
:mod:`kdmri_lib.datasets.head_model`) and rendered in two contrasts, T1w and T2w. It is a **stand-in** for a
real acquisition: the scalp and skull are a model and the k-space is *simulated*
(``head="brain"`` gives the skull-stripped T1w template alone, as the first demo data did).

For every chosen slice (axial, coronal and sagittal, every ``stride``-th slice with enough head
in it, the same positions in every contrast) the builder

1. centres the slice in a ``matrix x matrix`` field of view (zero background; the head fits in
   224 mm) and scales each contrast's volume to a maximum of 1;
2. multiplies it by a smooth random phase ``exp(i * phi)``, ``phi`` a random 2-D quadratic
   polynomial (as field inhomogeneity would give);
3. takes the centred orthonormal FFT (:func:`kdmri_lib.mri.physics.fft2c`) and adds complex
   Gaussian noise with standard deviation ``sigma = mean_foreground / 10**(snr_db / 20)``;
4. stores ``kspace`` and the fully-sampled magnitude ``reconstruction_esc = |ifft2c(kspace)|``
   (as fastMRI's single-coil target is the magnitude of the fully-sampled reconstruction).

Slices are grouped into volumes (files) of consecutive slices, one file per contrast
(``mni152_*``: T1w, ``mni152t2_*``: T2w). For each orientation the middle volume goes to
``singlecoil_val`` (in every contrast) and the slice just before and after it are dropped, so
validation positions never appear in training in any contrast, nor do their immediate neighbours.

A natural-image set for the paper's 1:1 MRI/natural mixing comes from scikit-image's bundled
sample images (a **stand-in** for Flickr2K), grayscale (Y of YCbCr, BT.601), centre-cropped to
a multiple of 16, with five images held out as the **Set5 stand-in**.

Everything is deterministic for a given seed, and a rebuild with the same configuration is
skipped (``manifest.json`` records the configuration and the files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from kdmri_lib.core.atomic import PARTIAL_DIR, ensure_dir, read_manifest, write_json
from kdmri_lib.core.errors import ConfigError, DataError, check_float, check_int
from kdmri_lib.datasets.demo_natural import (
    NATURAL_SET5,
    NATURAL_TRAIN,
    centre_crop_multiple,
    natural_image,
    save_png,
    to_luma,
)
from kdmri_lib.mri.fastmri_format import write_volume
from kdmri_lib.mri.kspace_sim import foreground_mean, noise_sigma, simulate_volume

MNI_RELATIVE = ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
ORIENTATIONS = ("axial", "coronal", "sagittal")
# array axis sliced for each orientation (the NIfTI volume is x = left-right, y = posterior-anterior,
# z = inferior-superior) and the acquisition name written into the files
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
_ACQ = {"axial": "AXT1", "coronal": "CORT1", "sagittal": "SAGT1"}

#: scikit-image sample images shipped inside its wheel (no download needed).

@dataclass(frozen=True)
class DemoConfig:
    """Configuration of the demo data set (its hash names a build in ``manifest.json``)."""

    matrix: int = 224                 # H = W of every slice (divisible by 16; the whole head fits 224 mm)
    stride: int = 3                   # take every stride-th slice (mm) of each orientation
    min_head_fraction: float = 0.15   # keep slices whose head covers at least this fraction of the FOV
    slices_per_volume: int = 6        # slices per file
    snr_db: float = 40.0              # 20 log10(mean foreground magnitude / noise std)
    max_phase_rad: float = 1.5        # scale of the smooth random phase (radians)
    seed: int = 0
    natural: bool = True
    natural_crop: int = 256           # natural images: centre crop to at most this size (multiple of 16)
    head: str = "whole"               # "whole": synthetic scalp and skull around the brain; "brain": skull-stripped
    contrasts: tuple = ("T1w", "T2w")  # contrasts of the whole head (kdmri_lib.datasets.head_model); "brain": T1w only
    heldout: bool = True              # singlecoil_heldout/: real MRI the models never see (nibabel's example EPI)
    version: int = 2

    def validate(self) -> "DemoConfig":
        check_int("matrix", self.matrix, minimum=64)
        if self.matrix % 16:
            raise ConfigError(f"matrix must be divisible by 16; got {self.matrix}")
        check_int("stride", self.stride, minimum=1)
        check_float("min_head_fraction", self.min_head_fraction, minimum=0.0, maximum=1.0)
        check_int("slices_per_volume", self.slices_per_volume, minimum=1)
        check_float("snr_db", self.snr_db, minimum=0.0, maximum=200.0)
        check_float("max_phase_rad", self.max_phase_rad, minimum=0.0, maximum=100.0)
        check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        for name in ("natural", "heldout"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")
        check_int("natural_crop", self.natural_crop, minimum=16)
        from kdmri_lib.datasets.head_model import CONTRASTS

        if self.head not in ("whole", "brain"):
            raise ConfigError(f"head must be 'whole' (synthetic scalp and skull) or 'brain' (skull-stripped); got {self.head!r}")
        if not self.contrasts or any(c not in CONTRASTS for c in self.contrasts) or len(set(self.contrasts)) != len(self.contrasts):
            raise ConfigError(f"contrasts must be distinct names from {', '.join(CONTRASTS)}; got {self.contrasts!r}")
        if self.head == "brain" and tuple(self.contrasts) != ("T1w",):
            raise ConfigError("head='brain' (the skull-stripped template) has one contrast: contrasts=('T1w',)")
        if self.natural_crop % 16:
            raise ConfigError(f"natural_crop must be divisible by 16; got {self.natural_crop}")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "DemoConfig":
        """The configuration recorded in a ``manifest.json`` (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in dict(d).items() if k in known}
        if "contrasts" in d:
            d["contrasts"] = tuple(d["contrasts"])   # a JSON list in manifest.json
        return cls(**d)

    def digest(self) -> str:
        d = asdict(self)
        d["contrasts"] = list(d["contrasts"])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Source volume
# --------------------------------------------------------------------------------------------

def mni_template_path() -> Path:
    """Path of the MNI152 T1 template inside the installed ``nilearn`` package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo data needs the 'nilearn' package (it ships the MNI152 template): pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNI_RELATIVE)
    if not path.exists():
        raise DataError(f"{path}: MNI152 template not found inside nilearn; reinstall nilearn")
    return path


def load_template() -> np.ndarray:
    """The MNI152 T1 volume as float32 scaled to a maximum of 1, shape (197, 233, 189)."""
    import nibabel as nib

    vol = np.asarray(nib.load(str(mni_template_path())).get_fdata(dtype=np.float32))
    return vol / vol.max()


def source_volumes(cfg: "DemoConfig") -> dict[str, np.ndarray]:
    """The 3-D volumes the slices come from, by contrast (each scaled to a maximum of 1).

    ``head="whole"``: :func:`kdmri_lib.datasets.head_model.build_head` (the template's brain in a synthetic
    scalp and skull, T1w and T2w); ``head="brain"``: the skull-stripped template (T1w).
    """
    if cfg.head == "brain":
        return {"T1w": load_template()}
    from kdmri_lib.datasets.head_model import build_head

    head = build_head(cfg.seed)
    return {c: head[c] / head[c].max() for c in cfg.contrasts}


#: file-name prefix and acquisition suffix of each contrast (T1w keeps the names of the first demo data)
_PREFIX = {"T1w": "mni152", "T2w": "mni152t2"}
_ACQ_CONTRAST = {"T1w": "T1", "T2w": "T2"}


#: the held-out real scan: nibabel's example EPI (``nibabel/tests/data/example4d.nii.gz``, MIT licence)
HELDOUT_NAME = "nibabel_example4d"


def heldout_images() -> np.ndarray:
    """The held-out real anatomy: every axial slice of the first volume of nibabel's example
    4-D EPI brain scan (a real acquisition of another subject, scanner and contrast than the
    template: 2 mm pixels, 24 slices), rotated like the demo slices and scaled to a maximum of 1;
    float32 ``(24, 96, 128)``. The models never train on it."""
    import nibabel as nib

    spec = importlib.util.find_spec("nibabel")
    path = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data" / "example4d.nii.gz"
    if not path.exists():
        raise DataError(f"{path}: nibabel's example scan is not installed (reinstall nibabel, or build with heldout=False)")
    vol = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))[..., 0]
    imgs = np.stack([np.ascontiguousarray(np.rot90(vol[:, :, i])) for i in range(vol.shape[2])])
    return (imgs / imgs.max()).astype(np.float32)


def _orient_slice(vol: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """One 2-D slice, rotated so that anterior/superior point up."""
    sl = np.take(vol, index, axis=_AXIS[orientation])
    return np.ascontiguousarray(np.rot90(sl))


def _centre_in_fov(img: np.ndarray, matrix: int, bbox: tuple[slice, slice]) -> np.ndarray:
    """Place the head (bounding box ``bbox``) at the centre of a ``matrix x matrix`` zero field."""
    crop = img[bbox]
    h, w = crop.shape
    if h > matrix or w > matrix:
        raise ConfigError(f"the head ({h}x{w} pixels) does not fit a {matrix}x{matrix} matrix; use matrix >= {max(h, w) + (-max(h, w)) % 16}")
    out = np.zeros((matrix, matrix), dtype=np.float32)
    top, left = (matrix - h) // 2, (matrix - w) // 2
    out[top: top + h, left: left + w] = crop
    return out


def plan_volumes(vol: np.ndarray, cfg: DemoConfig) -> list[dict]:
    """Which slices go into which file: a list of ``{name, split, orientation, contrast, indices}``.

    Slice positions are chosen on ``vol`` (the first contrast); every contrast gets the same
    positions and the same split, so no validation position is trained on in any contrast."""
    plan = []
    thr = 0.1
    for orientation in ORIENTATIONS:
        ax = _AXIS[orientation]
        other = tuple(i for i in range(3) if i != ax)
        frac = (vol > thr).mean(axis=other)
        idx = np.where(frac * (vol.shape[other[0]] * vol.shape[other[1]]) / (cfg.matrix ** 2) >= cfg.min_head_fraction)[0]
        if len(idx) == 0:
            continue
        chosen = list(range(int(idx[0]), int(idx[-1]) + 1, cfg.stride))
        n = cfg.slices_per_volume
        blocks = [chosen[i: i + n] for i in range(0, len(chosen), n)]
        mid = len(blocks) // 2
        val = blocks[mid]
        blocks_of = [("val", "val", val)]
        drop = {chosen[chosen.index(val[0]) - 1]} if chosen.index(val[0]) > 0 else set()
        if chosen.index(val[-1]) + 1 < len(chosen):
            drop.add(chosen[chosen.index(val[-1]) + 1])
        train = [i for i in chosen if i not in val and i not in drop]
        blocks_of += [("train", f"{b:02d}", train[start: start + n]) for b, start in enumerate(range(0, len(train), n))]
        for contrast in cfg.contrasts:
            for split, tag, indices in blocks_of:
                plan.append({"name": f"{_PREFIX[contrast]}_{orientation}_{tag}", "split": split, "orientation": orientation,
                             "contrast": contrast, "indices": indices})
    return plan


def head_bbox(vol: np.ndarray, orientation: str, thr: float = 0.02) -> tuple[slice, slice]:
    """Bounding box of the head in the rotated slices of one orientation (same for all slices)."""
    ax = _AXIS[orientation]
    proj = np.rot90((vol > thr).any(axis=ax))
    rows = np.where(proj.any(axis=1))[0]
    cols = np.where(proj.any(axis=0))[0]
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------

@dataclass
class BuildReport:
    out: Path
    built: bool
    seconds: float
    files: dict = field(default_factory=dict)       # split -> list of file names
    slices: dict = field(default_factory=dict)      # split -> number of slices
    shape: tuple = ()
    snr_db: float = 0.0
    noise_std: dict = field(default_factory=dict)
    natural: dict = field(default_factory=dict)     # split -> list of png names
    bytes: int = 0
    source: str = ""

    def summary(self) -> str:
        lines = [f"demo data in {self.out} ({'built' if self.built else 'already up to date'} in {self.seconds:.1f} s)"]
        for split in ("train", "val"):
            files = self.files.get(split, [])
            lines.append(f"  singlecoil_{split}: {len(files)} files, {self.slices.get(split, 0)} slices of {self.shape[0]}x{self.shape[1]}"
                         if self.shape else f"  singlecoil_{split}: {len(files)} files")
        if self.files.get("heldout"):
            lines.append(f"  singlecoil_heldout: {', '.join(self.files['heldout'])}, {self.slices.get('heldout', 0)} slices "
                         f"(real EPI brain scan from nibabel's test data; never trained on)")
        lines.append(f"  k-space: complex64, simulated from {self.source or 'the MNI152 template'}, smooth random phase, "
                     f"complex noise at SNR {self.snr_db:g} dB")
        for split, names in self.natural.items():
            label = "Set5 stand-in" if split == "set5" else "Flickr2K stand-in"
            lines.append(f"  natural/{split}: {len(names)} grayscale images ({label}, scikit-image samples)")
        lines.append(f"  size on disk: {self.bytes / 2**20:.1f} MiB")
        return "\n".join(lines)


def build_demo_data(
    out: str | os.PathLike = "data/demo",
    config: Optional[DemoConfig] = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Build (or verify) the embedded demo data set under ``out``.

    Layout::

        out/singlecoil_train/*.h5   fastMRI single-coil volumes (training)
        out/singlecoil_val/*.h5     held-out volumes (no slice shared with training)
        out/natural/train/*.png     grayscale natural images (Flickr2K stand-in)
        out/natural/set5/*.png      five held-out natural images (Set5 stand-in)
        out/manifest.json           configuration, files, summary

    A second call with the same configuration finds ``manifest.json`` and every listed file and
    does no work (``force=True`` rebuilds). Files are written atomically (temporary files in
    ``out/.partial``, never in a split folder), so an interrupted build leaves no half-written file;
    the manifest is marked incomplete while a build runs, so the next call redoes it (the same
    files, bit for bit: every file has its own seeded random stream). Files of an earlier
    configuration that the new one does not have are removed (only files a manifest listed).

    Raises:
        ConfigError: a bad configuration, one that gives no training or no validation volume, or
            an ``out`` (or a folder inside it) that is a file.
    """

    cfg = (config or DemoConfig()).validate()
    out = Path(out)
    t0 = time.perf_counter()
    manifest_path = out / "manifest.json"
    manifest = read_manifest(manifest_path)
    if not force and manifest and manifest.get("digest") == cfg.digest() and \
            all((out / f).exists() for f in manifest.get("files", [])):
        return _report_from_manifest(out, manifest, time.perf_counter() - t0)

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the demo data folder is a file; expected a folder (choose another path)")
    if progress:
        log("[demo] building the whole-head volumes (synthetic scalp and skull, "
            f"{', '.join(cfg.contrasts)}) ..." if cfg.head == "whole" else "[demo] loading the MNI152 template ...")
    vols = source_volumes(cfg)
    vol = vols[cfg.contrasts[0] if cfg.head == "whole" else "T1w"]
    plan = plan_volumes(vol, cfg)
    _check_plan(plan, cfg)
    _make_folders(out, cfg)
    # Before the first data file changes: the manifest no longer vouches for the folder (an interrupted
    # build is redone by the next call), and it lists every file of the old and the new build, so that
    # the next complete build can remove the files of an earlier configuration (never other files).
    earlier = list(dict.fromkeys((manifest or {}).get("files", []) + (manifest or {}).get("earlier_files", [])))
    write_json(manifest_path, {"digest": None, "incomplete": True, "building": cfg.digest(), "config": asdict(cfg),
                               "files": [], "earlier_files": earlier})
    partial = out / PARTIAL_DIR
    _clean_partial(partial)
    root_rng = np.random.default_rng(cfg.seed)
    # one independent stream per file, fixed by the plan order: deterministic and restartable
    streams = root_rng.spawn(len(plan))
    files: list[str] = []
    report = BuildReport(out=out, built=True, seconds=0.0, shape=(cfg.matrix, cfg.matrix), snr_db=cfg.snr_db,
                         source=_source_text(cfg))
    files += _write_mri_volumes(out, cfg, vols, vol, plan, streams, report, partial, progress)
    if cfg.heldout:
        files += _write_heldout(out, cfg, report, partial)
    if cfg.natural:
        files += _write_natural(out, cfg, report, partial)
    report.bytes = sum((out / f).stat().st_size for f in files)
    _remove_earlier(out, cfg, earlier, files)
    _clean_partial(partial, remove=True)
    report.seconds = time.perf_counter() - t0
    manifest = {
        "digest": cfg.digest(),
        "config": asdict(cfg),
        "files": files,
        "slices": report.slices,
        "shape": list(report.shape),
        "noise_std": report.noise_std,
        "bytes": report.bytes,
        "natural": report.natural,
        "volumes": [{k: v for k, v in p.items()} for p in plan],
    }
    write_json(manifest_path, manifest)
    return report





def _check_plan(plan: list[dict], cfg: DemoConfig) -> None:
    """A plan must give at least one training and one validation volume."""
    for split in ("train", "val"):
        if not any(p["split"] == split for p in plan):
            raise ConfigError(f"this demo configuration gives no {split} volume (stride {cfg.stride}, min_head_fraction "
                              f"{cfg.min_head_fraction}); use a smaller stride (default {DemoConfig.stride})")


def _make_folders(out: Path, cfg: DemoConfig) -> None:
    """The data folder and the split folders this configuration writes."""
    ensure_dir(out, "demo data folder")
    for sub in ("singlecoil_train", "singlecoil_val") + (("singlecoil_heldout",) if cfg.heldout else ()) + \
            (("natural/train", "natural/set5") if cfg.natural else ()):
        ensure_dir(out / sub, "demo data folder")


def _foreground_means(vols: dict, vol: np.ndarray, plan: list[dict], cfg: DemoConfig, bboxes: dict) -> dict:
    """``{(orientation, contrast): mean foreground intensity}`` of the planned slices (sets the noise level)."""
    fg_means = {}
    for o in ORIENTATIONS:
        for c, v in vols.items():
            vals = [_centre_in_fov(_orient_slice(v, o, i), cfg.matrix, bboxes[o])
                    for p in plan if p["orientation"] == o and p["contrast"] == c for i in p["indices"]]
            if vals:
                fg_means[o, c] = foreground_mean(np.stack(vals))
    return fg_means


def _write_mri_volumes(out: Path, cfg: DemoConfig, vols: dict, vol: np.ndarray, plan: list[dict], streams,
                       report: "BuildReport", partial: Path, progress: bool) -> list[str]:
    """Simulate and write the planned training / validation volumes (one random stream each)."""
    from tqdm.auto import tqdm

    bboxes = {o: head_bbox(vol, o) for o in ORIENTATIONS}
    fg_means = _foreground_means(vols, vol, plan, cfg, bboxes)
    files: list[str] = []
    bar = tqdm(plan, desc="demo volumes", disable=not progress, leave=False)
    for entry, rng in zip(bar, streams):
        o, c = entry["orientation"], entry["contrast"]
        sigma = noise_sigma(fg_means[o, c], cfg.snr_db)
        imgs = [_centre_in_fov(_orient_slice(vols[c], o, i), cfg.matrix, bboxes[o]) for i in entry["indices"]]
        kspace, target = simulate_volume(imgs, rng, sigma, cfg.max_phase_rad)
        rel = f"singlecoil_{entry['split']}/{entry['name']}.h5"
        write_volume(out / rel, kspace, target, {
            "acquisition": _ACQ[o][:-2] + _ACQ_CONTRAST[c],
            "patient_id": f"{_PREFIX[c]}-{o}-{entry['indices'][0]:03d}",
            "source": ("MNI152 ICBM 2009a template brain (nilearn) in a synthetic scalp and skull (kdmri_lib.datasets.head_model), "
                       f"{c}; simulated single-coil k-space") if cfg.head == "whole" else
                      "MNI152 ICBM 2009a T1 template (nilearn); simulated single-coil k-space",
            "contrast": c,
            "snr_db": float(cfg.snr_db),
            "noise_std": float(sigma),
            "slice_indices": np.asarray(entry["indices"], dtype=np.int32),
            "orientation": o,
        }, fov_mm=(float(cfg.matrix), float(cfg.matrix), 1.0), tmp_dir=partial)
        files.append(rel)
        report.files.setdefault(entry["split"], []).append(Path(rel).name)
        report.slices[entry["split"]] = report.slices.get(entry["split"], 0) + len(imgs)
        report.noise_std[f"{o} {c}"] = float(sigma)
    return files


def _write_heldout(out: Path, cfg: DemoConfig, report: "BuildReport", partial: Path) -> list[str]:
    """The held-out real scan (nibabel's EPI brain), simulated like the demo volumes."""
    imgs = heldout_images()
    rng = np.random.default_rng([cfg.seed, 7919])
    sigma = noise_sigma(foreground_mean(imgs), cfg.snr_db)
    kspace, target = simulate_volume(imgs, rng, sigma, cfg.max_phase_rad)
    rel = f"singlecoil_heldout/{HELDOUT_NAME}.h5"
    write_volume(out / rel, kspace, target, {
        "acquisition": "AXEPI", "patient_id": HELDOUT_NAME,
        "source": "nibabel example4d.nii.gz (a real EPI brain scan, first volume, 2 mm); simulated single-coil k-space",
        "snr_db": float(cfg.snr_db), "noise_std": float(sigma), "orientation": "axial", "contrast": "EPI",
    }, fov_mm=(2.0 * imgs.shape[1], 2.0 * imgs.shape[2], 2.2), tmp_dir=partial)
    report.files.setdefault("heldout", []).append(Path(rel).name)
    report.slices["heldout"] = len(imgs)
    return [rel]


def _write_natural(out: Path, cfg: DemoConfig, report: "BuildReport", partial: Path) -> list[str]:
    """The natural images (:mod:`kdmri_lib.datasets.demo_natural`) as PNGs."""
    files = []
    for split, names in (("train", NATURAL_TRAIN), ("set5", NATURAL_SET5)):
        folder = out / "natural" / split
        for name in names:
            img = centre_crop_multiple(to_luma(natural_image(name)), cfg.natural_crop)
            save_png(folder / f"{name}.png", img, tmp_dir=partial)
            files.append(f"natural/{split}/{name}.png")
            report.natural.setdefault(split, []).append(f"{name}.png")
    return files


def _remove_earlier(out: Path, cfg: DemoConfig, earlier: list[str], files: list[str]) -> None:
    """Remove the files of an earlier configuration that this one does not have (only ``.h5`` / ``.png``
    files a manifest listed), and the natural-image folders a build without them emptied."""
    now = set(files)
    for f in earlier:
        p = out / f
        if f not in now and p.is_file() and p.suffix in (".h5", ".png"):
            p.unlink()
    for sub in ("natural/train", "natural/set5", "natural"):
        d = out / sub
        if not cfg.natural and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _clean_partial(partial: Path, remove: bool = False) -> None:
    """Delete the temporary files an interrupted build left in ``partial`` (only ``.*.tmp`` files)."""
    if partial.is_dir():
        for p in partial.glob(".*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass
        if remove:
            try:
                partial.rmdir()
            except OSError:
                pass


def demo_status(out: str | os.PathLike) -> str:
    """``"absent"`` (no demo manifest), ``"complete"`` (manifest and every file it lists) or
    ``"incomplete"`` (an interrupted build, or files missing)."""
    m = read_manifest(Path(out) / "manifest.json")
    if m is None:
        return "absent" if not (Path(out) / "manifest.json").exists() else "incomplete"
    if m.get("incomplete") or not m.get("digest"):
        return "incomplete"
    return "complete" if all((Path(out) / f).exists() for f in m.get("files", [])) else "incomplete"


def _source_text(cfg: DemoConfig) -> str:
    if cfg.head == "whole":
        return f"the MNI152 brain in a synthetic scalp and skull ({', '.join(cfg.contrasts)})"
    return "the skull-stripped MNI152 T1 template"


def _report_from_manifest(out: Path, manifest: dict, seconds: float) -> BuildReport:
    files: dict = {}
    for f in manifest["files"]:
        if f.startswith("singlecoil_"):
            split = f.split("/")[0].replace("singlecoil_", "")
            files.setdefault(split, []).append(Path(f).name)
    return BuildReport(
        out=out, built=False, seconds=seconds, files=files, slices=manifest["slices"],
        shape=tuple(manifest["shape"]), snr_db=manifest["config"]["snr_db"], noise_std=manifest["noise_std"],
        natural=manifest.get("natural", {}), bytes=manifest["bytes"],
        source=_source_text(DemoConfig.from_dict(manifest["config"])),
    )
