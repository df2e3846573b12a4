"""Natural images for the paper's 1:1 MRI/natural mixing: Flickr2K (400 images) and Set5.

From local archives or folders (``src``), or downloaded (resumable, SHA-256 verified) from a URL.
Every image is stored as an 8-bit grayscale PNG of its Y channel (YCbCr, ITU-R BT.601, the same
:func:`kdmri_lib.datasets.demo_natural.to_luma` as the demo's stand-ins), centre-cropped to sides that are
multiples of 16 (and to at most ``max_size`` if given), in the same layout as the demo data, so
``natural_dir`` works the same::

    out/natural/train/<name>.png   Flickr2K: 400 HR images drawn with a fixed seed
    out/natural/set5/<name>.png    Set5: the five HR images
    out/natural_index.csv          set, file, source, size
    out/manifest_natural.json      configuration and files (a second run does nothing)

Layouts recognised (inside a zip / tar / tar.gz or an extracted folder):

* Flickr2K: ``Flickr2K/Flickr2K_HR/000001.png`` ... (the EDSR release, ``Flickr2K.tar``; its
  ``Flickr2K_LR_*`` folders are ignored). Without a ``Flickr2K_HR`` folder, every image that is
  not in a low-resolution folder (``LR*``, ``X2``/``X3``/``X4``, ``*x2.png`` names) is a candidate.
* Set5, the first layout that matches: ``Set5/GTmod12/*.png`` (BasicSR); ``Set5_HR/*.png`` or any
  ``*HR*`` folder (the Hugging Face ``eugenesiow/Set5`` archive); ``Set5/image_SRF_<k>/img_00N_SRF_<k>_HR.png``
  (SelfExSR; the smallest ``k``, the ``_HR`` files); ``Set5/original/*.png``; images directly in a
  ``Set5/`` folder. Low-resolution files and folders are never taken. Names are kept, minus
  ``_SRF_<k>_HR`` / ``_HR`` / ``_GT`` suffixes.

No checksum is known to this toolkit for the public mirrors below (we never invent one): pass
``--sha256`` for a file you trust, use a local archive, or explicitly allow an unverified download
(``--allow-unverified`` prints the hash it got, to pin it next time).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np

from kdmri_lib.core.errors import ConfigError, DataError, check_int
from kdmri_lib.datasets.data import IMAGE_SUFFIXES
from kdmri_lib.datasets.demo_natural import centre_crop_multiple, save_png
from kdmri_lib.datasets.real_data import _common as C


@dataclass(frozen=True)
class KnownSource:
    url: str
    sha256: Optional[str]
    layout: str
    note: str


#: Public mirrors commonly used by super-resolution code. Checksums: None = not known here.
KNOWN_SOURCES: dict[str, tuple[KnownSource, ...]] = {
    "flickr2k": (
        KnownSource("https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", None, "Flickr2K/Flickr2K_HR/*.png",
                    "EDSR authors (SNU); 2650 HR images plus LR versions in one large uncompressed tar"),
    ),
    "set5": (
        KnownSource("https://huggingface.co/datasets/eugenesiow/Set5/resolve/main/data/Set5_HR.tar.gz", None,
                    "Set5_HR/*.png", "Hugging Face dataset eugenesiow/Set5 (HR images)"),
        KnownSource("https://uofi.box.com/shared/static/kfahv87nfe8ax910l85dksyl2q212voc.zip", None,
                    "Set5/image_SRF_<k>/img_00N_SRF_<k>_HR.png", "SelfExSR (Huang et al.) test sets"),
    ),
}
SETS = {"flickr2k": "train", "set5": "set5"}
INDEX_NAME = "natural_index.csv"
INDEX_COLUMNS = ("set", "file", "source", "size")

_LR_DIR = re.compile(r"^(lr.*|.*_lr|.*lr_bicubic.*|.*lr_unknown.*|lrbicx\d+|x\d|.*bicubic.*)$", re.I)
_LR_FILE = re.compile(r"(_lr|(?<=\d)x\d|_bicubic)$", re.I)


@dataclass(frozen=True)
class NaturalConfig:
    n_train: int = 400            # Flickr2K images drawn (seeded)
    seed: int = 0
    max_size: Optional[int] = None  # centre crop to at most this size (multiple of 16); None: whole image
    version: int = 1

    def validate(self) -> "NaturalConfig":
        check_int("n_train", self.n_train, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.max_size is not None:
            check_int("max_size", self.max_size, minimum=16)
            if self.max_size % 16:
                raise ConfigError(f"max_size must be divisible by 16; got {self.max_size}")
        return self

    def set_digest(self, name: str) -> str:
        d = {"max_size": self.max_size, "version": self.version}
        if name == "flickr2k":
            d.update(n_train=self.n_train, seed=self.seed)
        return C.digest(d)


@dataclass
class NaturalReport:
    out: Path
    worked: bool = False
    seconds: float = 0.0
    files: dict = field(default_factory=dict)        # set -> count
    done: dict = field(default_factory=dict)         # set -> "prepared" / "up to date"
    unreadable: list = field(default_factory=list)
    downloaded: list = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"natural images in {self.out / 'natural'} "
                 f"({'prepared' if self.worked else 'already up to date, nothing to do'} in {self.seconds:.1f} s)"]
        for name, split in SETS.items():
            if name in self.files:
                label = "Flickr2K HR, seeded draw" if name == "flickr2k" else "Set5 HR"
                lines.append(f"  natural/{split}: {self.files[name]} grayscale (Y, BT.601) PNGs ({label}; {self.done[name]})")
        lines += [f"  downloaded {d}" for d in self.downloaded]
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable image(s) skipped:")
            lines += [f"    {u}" for u in self.unreadable[:10]]
        return "\n".join(lines)


def _is_image(n: str) -> bool:
    return PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES


def _is_lr(n: str) -> bool:
    p = PurePosixPath(n)
    return any(_LR_DIR.match(d) for d in p.parts[:-1]) or bool(_LR_FILE.search(p.stem))


def select_flickr2k(names: Sequence[str], n: int, seed: int) -> list[str]:
    """The HR images of a Flickr2K archive, ``n`` of them drawn with ``seed`` (sorted by name)."""
    imgs = [x for x in names if _is_image(x)]
    hr = [x for x in imgs if any(d.lower() == "flickr2k_hr" for d in PurePosixPath(x).parts[:-1])]
    if not hr:
        hr = [x for x in imgs if not _is_lr(x)]
    hr = sorted(hr)
    if len(hr) < n:
        raise DataError(f"found {len(hr)} high-resolution images, {n} needed (expected Flickr2K/Flickr2K_HR/*.png)")
    idx = np.random.default_rng(seed).choice(len(hr), size=n, replace=False)
    return [hr[i] for i in sorted(idx)]


def select_set5(names: Sequence[str]) -> list[str]:
    """The HR images of a Set5 archive (see the module docstring for the layouts)."""
    imgs = sorted(x for x in names if _is_image(x))

    def parent(x: str) -> str:
        return PurePosixPath(x).parent.name.lower()

    rules = (
        lambda x: parent(x) == "gtmod12",
        lambda x: "hr" in re.split(r"[^a-z]+", parent(x)) and not _is_lr(x),
        None,  # image_SRF_<k>: handled below
        lambda x: parent(x) == "original",
        lambda x: parent(x) == "set5" and not _is_lr(x),
    )
    for rule in rules:
        if rule is None:
            srf = {}
            for x in imgs:
                m = re.fullmatch(r"image_srf_(\d+)", parent(x))
                if m and PurePosixPath(x).stem.lower().endswith("_hr"):
                    srf.setdefault(int(m.group(1)), []).append(x)
            if srf:
                return srf[min(srf)]
            continue
        hit = [x for x in imgs if rule(x)]
        if hit:
            return hit
    hit = [x for x in imgs if not _is_lr(x)]
    if not hit:
        raise DataError("no high-resolution Set5 images found (expected Set5/GTmod12/*.png, Set5_HR/*.png, "
                        "Set5/image_SRF_4/*_HR.png or Set5/*.png)")
    return hit


def clean_name(member: str) -> str:
    stem = PurePosixPath(member).stem
    stem = re.sub(r"(_SRF_\d+)?_(HR|GT)$", "", stem, flags=re.I)
    return C.safe_name(stem) + ".png"


def _resolve_source(name: str, src, url, sha256, downloads: Path, allow_unverified: bool, progress: bool,
                    log: C.Log, report: NaturalReport) -> Path:
    if src is not None:
        return Path(src).expanduser()
    from kdmri_lib.datasets.real_data.http_download import download

    if url is None:
        known = KNOWN_SOURCES[name][0]
        url, sha256 = known.url, sha256 or known.sha256
    if sha256 is None and not allow_unverified:
        mirrors = "\n  ".join(f"{k.url}  ({k.note})" for k in KNOWN_SOURCES[name])
        raise DataError(f"{name}: no SHA-256 checksum is known for {url}, and downloads are only made verified. "
                        f"Pass --{name}-sha256 HASH from a source you trust, use a local archive with --{name}-src, "
                        f"or pass --allow-unverified (the hash it got is printed, to pin it next time). "
                        f"Known public mirrors:\n  {mirrors}")
    fname = C.safe_name(PurePosixPath(url.split("?")[0]).name) or f"{name}.archive"
    dest = download(url, downloads / fname, sha256, progress=progress, log=log)
    report.downloaded.append(f"{url} -> {dest}")
    return dest


def _convert_set(reader, chosen: list, name: str, folder: Path, out: Path, cfg: "NaturalConfig",
                 report: "NaturalReport", progress: bool) -> tuple[list, list]:
    """Convert the chosen images of one set to grayscale PNGs (an unreadable image is reported and
    skipped); returns the written files and the index rows."""
    from tqdm.auto import tqdm

    tmp_dir = C.partial_dir(out)
    files, rows = [], []
    used = set()
    for member, data in tqdm(reader.iter_read(chosen), total=len(chosen), desc=name, unit="img",
                             disable=not progress):
        fn = clean_name(member)
        if fn in used:
            fn = C.safe_name(PurePosixPath(member).with_suffix("").as_posix()) + ".png"
        used.add(fn)
        try:
            img = C.load_luma(data, member)
            if min(img.shape) < 16:
                raise DataError(f"{member}: image {img.shape} is smaller than 16 pixels")
            img = centre_crop_multiple(img, cfg.max_size, 16)
        except DataError as e:
            report.unreadable.append(str(e))
            continue
        save_png(folder / fn, img, tmp_dir=tmp_dir)
        files.append(f"natural/{SETS[name]}/{fn}")
        rows.append({"set": name, "file": f"{SETS[name]}/{fn}", "source": member,
                     "size": f"{img.shape[0]}x{img.shape[1]}"})
    return files, rows


def prepare_natural(
    out: str | os.PathLike,
    sets: Sequence[str] = ("flickr2k", "set5"),
    src: Optional[dict] = None,
    url: Optional[dict] = None,
    sha256: Optional[dict] = None,
    config: Optional[NaturalConfig] = None,
    downloads: Optional[str | os.PathLike] = None,
    allow_unverified: bool = False,
    force: bool = False,
    progress: bool = True,
    log: C.Log = print,
) -> NaturalReport:
    """Prepare Flickr2K (``natural/train``) and/or Set5 (``natural/set5``) under ``out``.

    Args:
        sets: which of ``"flickr2k"``, ``"set5"``.
        src: ``{set: local archive or folder}``; a set without a local source is downloaded.
        url, sha256: ``{set: ...}`` overrides of :data:`KNOWN_SOURCES`.
        downloads: where archives are downloaded to (default ``out/downloads``); they are kept,
            so a later run with another configuration needs no new download.
        allow_unverified: download even without an expected checksum.
    """
    cfg = (config or NaturalConfig()).validate()
    src, url, sha256 = dict(src or {}), dict(url or {}), dict(sha256 or {})
    for s in (*sets, *src, *url, *sha256):
        if s not in SETS:
            raise ConfigError(f"unknown natural-image set {s!r}; choose from {', '.join(SETS)}")
    out = Path(out)
    t0 = time.perf_counter()
    C.check_out_dir(out, "natural")
    manifest_path = out / C.MANIFESTS["natural"]
    manifest = C.read_manifest(manifest_path) or {"kind": "natural", "sets": {}}
    report = NaturalReport(out=out)
    downloads = Path(downloads) if downloads else out / "downloads"
    for name in sets:
        prev = manifest["sets"].get(name, {})
        dig = cfg.set_digest(name)
        if not force and prev.get("digest") == dig and all((out / f).exists() for f in prev.get("files", [])):
            report.files[name], report.done[name] = len(prev["files"]), "up to date"
            continue
        report.worked = True
        path = _resolve_source(name, src.get(name), url.get(name), sha256.get(name), downloads, allow_unverified,
                               progress, log, report)
        folder = out / "natural" / SETS[name]
        with C.SourceReader(path) as reader:
            names = reader.names()
            chosen = select_flickr2k(names, cfg.n_train, cfg.seed) if name == "flickr2k" else select_set5(names)
            folder.mkdir(parents=True, exist_ok=True)   # the source is usable: only now is anything written
            C.clean_partial(out)                         # temporary files of an interrupted run
            files, rows = _convert_set(reader, chosen, name, folder, out, cfg, report, progress)
        if not files:
            raise DataError(f"{path}: no readable {name} images")
        if name == "set5" and len(files) != 5:
            log(f"warning: Set5 should have 5 images; {path} gave {len(files)}")
        for f in prev.get("files", []):  # files of an earlier configuration
            if f not in files and (out / f).exists():
                (out / f).unlink()
        manifest["sets"][name] = {"digest": dig, "config": asdict(cfg), "source": str(path), "files": files,
                                  "rows": rows}
        report.files[name], report.done[name] = len(files), "prepared"
        C.write_json(manifest_path, manifest)
        C.clean_partial(out)
    if report.worked:
        rows = [r for s in SETS for r in manifest["sets"].get(s, {}).get("rows", [])]
        C.write_csv(out / INDEX_NAME, rows, INDEX_COLUMNS)
    report.seconds = time.perf_counter() - t0
    return report
