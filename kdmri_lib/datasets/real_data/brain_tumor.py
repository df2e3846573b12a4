"""Kaggle "Brain Tumor MRI Dataset" -> fastMRI-format single-coil files with simulated k-space.

Source: the Kaggle data set by Masoud Nickparvar (7023 JPEG images of four classes), downloaded
by the user (Kaggle needs an account) as a zip or an extracted folder with the layout::

    Training/{glioma,meningioma,notumor,pituitary}/Tr-*.jpg
    Testing/{glioma,meningioma,notumor,pituitary}/Te-*.jpg

(found at any depth; the older class names ``glioma_tumor``, ``no_tumor``, ... are accepted).

The paper's split: **400 training images** drawn from ``Training/`` (balanced, 100 per class; the
paper does not say more, balancing is our choice) and **20 test images, five per class**, drawn
from ``Testing/``; a fixed seed makes the draw reproducible, and the draw depends only on the file
names, so the zip and the extracted folder give the same split. An image that cannot be decoded
is reported and replaced by the next one of the same seeded order.

Each image becomes one single-slice fastMRI-format volume (one file per image: the images are
independent 2-D scans, so fastMRI's volume-wise metrics and per-file validation masks treat each
on its own):

1. grayscale (Y of YCbCr, BT.601) in [0, 1];
2. zero-padded to a square (centred; the Kaggle images are 512 x 512 mostly, some are smaller or
   not square) and resized to ``matrix x matrix`` (default 256 x 256, divisible by 16; bicubic with
   anti-aliasing), so the aspect ratio is kept;
3. k-space simulated **exactly as for the demo data** (:func:`kdmri_lib.mri.kspace_sim.simulate_volume`):
   a smooth random phase (scale 1.5 rad), the centred orthonormal FFT, complex Gaussian noise at
   40 dB SNR relative to the image's mean foreground magnitude (pixels > 0.1), one random stream
   per image seeded from ``(seed, source file name)``;
4. ``reconstruction_esc = |ifft2c(kspace)|``, header with encoded = recon = ``matrix``.

Layout::

    out/singlecoil_train/<class>_<image>.h5   400 volumes (1 slice each)
    out/singlecoil_val/<class>_<image>.h5     20 volumes (the test images, 5 per class)
    out/brain_tumor_index.csv                 split, file, class, source, original size
    out/manifest_brain_tumor.json             configuration and files (a second run does nothing)
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

import h5py
import numpy as np

from kdmri_lib.core.errors import ConfigError, DataError, check_float, check_int
from kdmri_lib.datasets.data import IMAGE_SUFFIXES
from kdmri_lib.datasets.demo_data import DemoConfig
from kdmri_lib.datasets.real_data import _common as C
from kdmri_lib.mri.fastmri_format import write_volume
from kdmri_lib.mri.kspace_sim import foreground_mean, noise_sigma, simulate_volume

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
_ALIASES = {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "no_tumor": "notumor",
            "no_tumour": "notumor", "pituitary_tumor": "pituitary"}
SPLIT_DIRS = {"train": "training", "test": "testing"}
OUT_SPLIT = {"train": "singlecoil_train", "test": "singlecoil_val"}
ACQUISITION = "BRAIN_TUMOR_MRI"
INDEX_NAME = "brain_tumor_index.csv"
INDEX_COLUMNS = ("split", "file", "class", "source", "original_size")


@dataclass(frozen=True)
class BrainTumorConfig:
    """The paper's split by default: 400 training images, 5 test images per class."""

    n_train: int = 400
    n_test_per_class: int = 5
    matrix: int = 256
    snr_db: float = DemoConfig.snr_db
    max_phase_rad: float = DemoConfig.max_phase_rad
    seed: int = 0
    version: int = 1

    def validate(self) -> "BrainTumorConfig":
        check_int("n_train", self.n_train, minimum=len(CLASSES))
        check_int("n_test_per_class", self.n_test_per_class, minimum=1)
        check_int("matrix", self.matrix, minimum=16)
        if self.matrix % 16:
            raise ConfigError(f"matrix must be divisible by 16; got {self.matrix}")
        check_float("snr_db", self.snr_db)
        check_int("seed", self.seed, minimum=0)
        return self

    def per_class(self, split: str) -> dict[str, int]:
        if split == "test":
            return {c: self.n_test_per_class for c in CLASSES}
        q, r = divmod(self.n_train, len(CLASSES))
        return {c: q + (i < r) for i, c in enumerate(CLASSES)}


@dataclass
class BrainTumorReport:
    out: Path
    worked: bool = False
    seconds: float = 0.0
    files: dict = field(default_factory=dict)        # split -> count
    written: int = 0
    kept: int = 0
    unreadable: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    config: Optional[BrainTumorConfig] = None

    def summary(self) -> str:
        cfg = self.config
        lines = [f"Brain tumor MRI (Kaggle) in {self.out} "
                 f"({'prepared' if self.worked else 'already up to date, nothing to do'} in {self.seconds:.1f} s)"]
        for split, folder in OUT_SPLIT.items():
            lines.append(f"  {folder}: {self.files.get(split, 0)} single-slice volumes of {cfg.matrix}x{cfg.matrix}")
        lines.append(f"  k-space: simulated (demo-data recipe), smooth random phase, complex noise at SNR {cfg.snr_db:g} dB, "
                     f"seed {cfg.seed}")
        if self.worked:
            lines.append(f"  this run: {self.written} written, {self.kept} already there")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable image(s) skipped and replaced:")
            lines += [f"    {u}" for u in self.unreadable[:10]]
        if self.removed:
            lines.append(f"  removed {len(self.removed)} file(s) of an earlier configuration")
        lines.append(f"  index: {self.out / INDEX_NAME}")
        return "\n".join(lines)


def _class_of(name: str) -> Optional[str]:
    n = name.lower()
    n = _ALIASES.get(n, n)
    return n if n in CLASSES else None


def list_images(names: list[str]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``(split, class) -> [(canonical name, member name), ...]`` of the Kaggle layout in ``names``.

    The canonical name ``Training/<class>/<file>`` does not depend on where the layout sits in
    the zip or folder, so the draw and the simulated noise are the same for both. A file name
    that occurs twice in one class (a duplicated folder) is taken once.
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    for n in names:
        parts = PurePosixPath(n).parts
        if PurePosixPath(n).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        for i in range(len(parts) - 2):
            split = next((k for k, v in SPLIT_DIRS.items() if parts[i].lower() == v), None)
            cls = _class_of(parts[i + 1]) if split else None
            if split and cls:
                canon = f"{SPLIT_DIRS[split].capitalize()}/{cls}/{parts[-1]}"
                found.setdefault((split, cls), {}).setdefault(canon, n)
                break
    return {k: sorted(v.items()) for k, v in found.items()}


def plan_split(images: dict, cfg: BrainTumorConfig) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The seeded order in which images of each ``(split, class)`` are taken."""
    rng = np.random.default_rng(cfg.seed)
    order = {}
    for split in ("train", "test"):
        for cls, n in cfg.per_class(split).items():
            names = images.get((split, cls), [])
            if len(names) < n:
                raise DataError(f"{SPLIT_DIRS[split].capitalize()}/{cls}: {len(names)} images, {n} needed")
            order[(split, cls)] = [names[i] for i in rng.permutation(len(names))]
    return order


def out_name(cls: str, member: str) -> str:
    return f"{cls}_{C.safe_name(PurePosixPath(member).stem)}.h5"


def square_resize(img: np.ndarray, matrix: int) -> np.ndarray:
    """Zero-pad to a centred square, then resize to ``matrix x matrix`` (bicubic, anti-aliased)."""
    from skimage.transform import resize

    H, W = img.shape
    S = max(H, W)
    sq = np.zeros((S, S), dtype=np.float32)
    sq[(S - H) // 2: (S - H) // 2 + H, (S - W) // 2: (S - W) // 2 + W] = img
    if S != matrix:
        sq = resize(sq, (matrix, matrix), order=3, anti_aliasing=S > matrix, mode="constant", preserve_range=True)
    return np.clip(sq, 0.0, 1.0).astype(np.float32)


def _image_rng(seed: int, member: str) -> np.random.Generator:
    import hashlib

    h = hashlib.sha256(f"{seed}/{member}".encode()).digest()
    return np.random.default_rng(np.frombuffer(h[:16], dtype=np.uint32))


def convert_image(data: bytes, member: str, cls: str, split: str, dest: Path, cfg: BrainTumorConfig,
                  tmp_dir: Path) -> dict:
    """One Kaggle image -> one fastMRI-format single-slice file; returns its index row."""
    img = C.load_luma(data, member)
    original = img.shape
    img = square_resize(img, cfg.matrix)
    fg = foreground_mean(img)
    if fg <= 0:
        raise DataError(f"{member}: the image is (nearly) black; nothing to simulate")
    sigma = noise_sigma(fg, cfg.snr_db)
    kspace, target = simulate_volume([img], _image_rng(cfg.seed, member), sigma, cfg.max_phase_rad)
    tmp = tmp_dir / dest.name
    write_volume(tmp, kspace, target, {
        "acquisition": ACQUISITION,
        "patient_id": PurePosixPath(member).stem,
        "label": cls,
        "split_source": SPLIT_DIRS[split].capitalize(),
        "source": "Kaggle Brain Tumor MRI Dataset (Nickparvar); simulated single-coil k-space",
        "source_image": member,
        "original_shape": np.asarray(original, dtype=np.int32),
        "snr_db": float(cfg.snr_db),
        "noise_std": float(sigma),
        "config_digest": C.digest(asdict(cfg)),
    }, fov_mm=(float(cfg.matrix), float(cfg.matrix), 1.0))
    C.place(tmp, dest)
    return _row(split, dest.name, cls, member, original)


def _row(split, file, cls, member, original) -> dict:
    return {"split": OUT_SPLIT[split].replace("singlecoil_", ""), "file": file, "class": cls, "source": member,
            "original_size": f"{int(original[0])}x{int(original[1])}"}


def _row_from_file(path: Path, split: str, cls: str, dig: str) -> Optional[dict]:
    """The index row of a file an earlier (interrupted) run wrote with the same configuration."""
    try:
        with h5py.File(path, "r") as hf:
            d = hf.attrs.get("config_digest", "")
            if (d.decode() if isinstance(d, bytes) else str(d)) != dig:
                return None
            member = hf.attrs["source_image"]
            member = member.decode() if isinstance(member, bytes) else str(member)
            return _row(split, path.name, cls, member, hf.attrs["original_shape"])
    except (OSError, KeyError):
        return None


def _convert_all(reader, order: dict, out: Path, cfg: "BrainTumorConfig", dig: str, src: Path,
                 report: "BrainTumorReport", force: bool, progress: bool) -> tuple[list, list]:
    """Convert the planned images of every split and class (an image already converted with this
    configuration is kept); returns the index rows and the written files."""
    from tqdm.auto import tqdm

    tmp_dir = C.partial_dir(out)
    total = sum(sum(cfg.per_class(s).values()) for s in ("train", "test"))
    rows, files = [], []
    bar = tqdm(total=total, desc="brain tumor images", unit="img", disable=not progress)
    for (split, cls), candidates in order.items():
        need = cfg.per_class(split)[cls]
        folder = out / OUT_SPLIT[split]
        folder.mkdir(parents=True, exist_ok=True)
        taken = 0
        for canon, member in candidates:
            if taken == need:
                break
            dest = folder / out_name(cls, canon)
            row = _row_from_file(dest, split, cls, dig) if dest.exists() and not force else None
            if row is not None and row["source"] == canon:
                report.kept += 1
            else:
                try:
                    row = convert_image(reader.read(member), canon, cls, split, dest, cfg, tmp_dir)
                except DataError as e:
                    report.unreadable.append(str(e))
                    continue
                report.written += 1
            rows.append(row)
            files.append(f"{OUT_SPLIT[split]}/{dest.name}")
            taken += 1
            bar.update(1)
        if taken < need:
            raise DataError(f"{src}: only {taken} readable images in {SPLIT_DIRS[split].capitalize()}/{cls}, "
                            f"{need} needed")
    bar.close()
    return rows, files


def prepare_brain_tumor(
    src: Optional[str | os.PathLike],
    out: str | os.PathLike,
    config: Optional[BrainTumorConfig] = None,
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    downloads: Optional[str | os.PathLike] = None,
    force: bool = False,
    progress: bool = True,
    log: C.Log = print,
) -> BrainTumorReport:
    """Build the brain-tumor data set in ``out`` from the Kaggle zip or folder ``src``.

    ``url`` (+ ``sha256``) instead of ``src`` downloads the zip first (to ``downloads``, default
    ``out/downloads``) with :func:`~kdmri_lib.datasets.real_data.http_download.download`. A second call with
    the same configuration finds the manifest and every file and does nothing; an interrupted
    call is completed by the next (files are written atomically, existing ones are kept).
    """
    cfg = (config or BrainTumorConfig()).validate()
    out = Path(out)
    t0 = time.perf_counter()
    C.check_out_dir(out, "brain_tumor")
    manifest_path = out / C.MANIFESTS["brain_tumor"]
    dig = C.digest(asdict(cfg))
    old = C.read_manifest(manifest_path) or {}
    report = BrainTumorReport(out=out, config=cfg)
    if not force and old.get("digest") == dig and all((out / f).exists() for f in old.get("files", [])):
        report.files = old.get("counts", {})
        report.seconds = time.perf_counter() - t0
        return report
    report.worked = True
    if src is None:
        if url is None:
            raise ConfigError("give the Kaggle zip or folder (src) or a url to download it from")
        from kdmri_lib.datasets.real_data.http_download import download

        dl = Path(downloads) if downloads else out / "downloads"
        src = download(url, dl / (Path(url.split("?")[0]).name or "brain_tumor.zip"), sha256, progress=progress, log=log)
    src = Path(src)
    with C.SourceReader(src) as reader:
        images = list_images(reader.names())
        missing = [f"{SPLIT_DIRS[s].capitalize()}/{c}" for s in ("train", "test") for c in CLASSES if (s, c) not in images]
        if missing:
            raise DataError(f"{src}: not the Kaggle Brain Tumor MRI layout; missing folders {', '.join(missing)} "
                            f"(expected Training/ and Testing/ with {', '.join(CLASSES)})")
        order = plan_split(images, cfg)
        C.clean_partial(out)          # the source is usable: only now is anything written under out
        rows, files = _convert_all(reader, order, out, cfg, dig, src, report, force, progress)
    # files of an earlier configuration
    now = set(files)
    for f in old.get("files", []):
        if f not in now and (out / f).exists():
            (out / f).unlink()
            report.removed.append(f)
    report.files = {s: sum(1 for r in rows if r["split"] == OUT_SPLIT[s].replace("singlecoil_", "")) for s in OUT_SPLIT}
    C.write_csv(out / INDEX_NAME, rows, INDEX_COLUMNS)
    C.write_json(manifest_path, {"kind": "brain_tumor", "digest": dig, "config": asdict(cfg), "files": files,
                                 "counts": report.files, "source": str(src), "unreadable": report.unreadable})
    C.clean_partial(out)
    report.seconds = time.perf_counter() - t0
    return report
