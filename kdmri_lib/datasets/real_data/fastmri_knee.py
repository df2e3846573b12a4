"""fastMRI single-coil knee: verify, index and lay out the official archives (no re-writing).

Users download the data themselves under fastMRI's licence (https://fastmri.med.nyu.edu/):
``knee_singlecoil_train.tar.xz`` (about 88 GB), ``knee_singlecoil_val.tar.xz`` and
``knee_singlecoil_test.tar.xz`` (older releases: ``.tar.gz``, ``knee_singlecoil_test_v2``).
:func:`prepare_fastmri` takes those archives, or the folders they were extracted to, or a folder
holding either, and produces the layout every loader of the toolkit reads::

    out/singlecoil_train/*.h5     official training volumes
    out/singlecoil_val/*.h5       official validation volumes (our held-out set)
    out/singlecoil_test/*.h5      official test volumes (under-sampled k-space + mask, no target)
    out/fastmri_index.csv         split, file, slices, matrix, recon, acquisition, patient_id, esc_nmse, notes
    out/corrupt.txt               files that failed verification, with the reason (only if any)
    out/manifest_fastmri.json     what was done (a second run with the same sources does nothing)

How the big files get there (never an in-memory copy, never a re-encoding):

* from an **archive**: the archive is streamed once (``tarfile`` stream mode, any of gz/xz/bz2),
  with a progress bar over the compressed bytes; every ``.h5`` member is written to
  ``out/.partial/``, verified, and moved into its split folder. A member that fails the check is
  deleted and listed in ``corrupt.txt``; the rest is kept. An interrupted run keeps the files
  already in place, and the next run skips them (it still has to decompress past them).
* from an **extracted folder**: every file is verified where it is and *linked* into the split
  folder: a hard link when ``out`` is on the same file system (no extra space; survives moving
  the source), else an absolute symbolic link (``--link`` chooses: auto / hardlink / symlink /
  copy). Nothing is moved or deleted in the source folder.

Verification of every file (:func:`verify_knee_file`): readable HDF5, ``kspace`` rank 3 complex,
a parsable ISMRMRD header, and for train/val a float ``reconstruction_esc`` with as many slices
whose size equals the header's recon size (320 x 320). Recorded but not rejected (``notes``):
an acquisition other than CORPD_FBK / CORPDFS_FBK, a k-space height different from the header's
encoded size, a test file without a mask, and a large ``esc_nmse``: the normalised squared
difference between ``reconstruction_esc`` and ``|crop(ifft2c(kspace))|`` on the middle slice
(the relation the toolkit's transform relies on). ``full_check`` also reads every k-space sample
and rejects NaN/Inf.

``sample_rate`` < 1 keeps a deterministic fraction of the *volumes* of every split, chosen by a
hash of the file name (the same files on every machine, from archives or folders alike).

How the tasks use the 640 x 368 k-space is decided in :mod:`kdmri_lib.datasets.data` (``sr``: k-space of
the 320 x 320 image; ``cs``: the raw k-space, masked, with fastMRI's centre crop).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import h5py
import numpy as np

from kdmri_lib.core.errors import DataError, check_choice, check_float
from kdmri_lib.datasets.real_data import _common as C
from kdmri_lib.mri.fastmri_format import check_file

#: official acquisitions of the single-coil knee data (proton density, with / without fat suppression)
ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
OUT_SPLITS = {"train": "singlecoil_train", "val": "singlecoil_val", "test": "singlecoil_test",
              "challenge": "singlecoil_challenge"}
LINK_MODES = ("auto", "hardlink", "symlink", "copy")
INDEX_NAME = "fastmri_index.csv"
CORRUPT_NAME = "corrupt.txt"
INDEX_COLUMNS = ("split", "file", "slices", "matrix", "recon", "acquisition", "patient_id", "esc_nmse", "notes")
ESC_NMSE_NOTE = 0.05

_SPLIT_RE = re.compile(r"(?:^|[^a-z])(?:knee_)?singlecoil_(train|val|test|challenge)(?:_v\d+)?(?:$|[^a-z])", re.I)


def split_of(name: str) -> Optional[str]:
    """``train`` / ``val`` / ``test`` / ``challenge`` from a fastMRI archive, folder or member name."""
    m = _SPLIT_RE.search(name)
    return m.group(1).lower() if m else None


def selected(fname: str, sample_rate: float) -> bool:
    """Deterministic volume sampling by file name (independent of order and machine)."""
    if sample_rate >= 1.0:
        return True
    h = int(hashlib.sha256(fname.encode()).hexdigest()[:8], 16) / 2 ** 32
    return h < sample_rate


@dataclass(frozen=True)
class FastMRIConfig:
    sample_rate: float = 1.0
    full_check: bool = False
    link: str = "auto"
    version: int = 1

    def validate(self) -> "FastMRIConfig":
        check_float("sample_rate", self.sample_rate, minimum=0.0, maximum=1.0, strict_min=True)
        check_choice("link", self.link, LINK_MODES)
        return self


@dataclass
class Source:
    path: Path
    kind: str                 # "archive" or "folder"
    split: Optional[str]      # None: from each member's folder name (archives only)


@dataclass
class FastMRIReport:
    out: Path
    seconds: float = 0.0
    worked: bool = False
    counts: Counter = field(default_factory=Counter)      # extracted / linked / kept / corrupt / skipped-source
    rows: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"fastMRI single-coil knee in {self.out} "
                 f"({'prepared' if self.worked else 'already up to date, nothing to do'} in {self.seconds:.1f} s)"]
        for split in OUT_SPLITS:
            rows = [r for r in self.rows if r["split"] == split]
            if rows:
                mats = Counter(r["matrix"] for r in rows)
                acq = Counter(r["acquisition"] for r in rows)
                lines.append(f"  {OUT_SPLITS[split]}: {len(rows)} volumes, {sum(int(r['slices']) for r in rows)} slices; "
                             f"k-space {', '.join(f'{m} x{n}' for m, n in mats.most_common(4))}; "
                             f"{', '.join(f'{a} x{n}' for a, n in acq.most_common())}")
        done = {k: v for k, v in self.counts.items() if v}
        if done:
            lines.append("  this run: " + ", ".join(f"{k} {v}" for k, v in sorted(done.items())))
        if self.corrupt:
            lines.append(f"  {len(self.corrupt)} corrupt file(s) skipped, listed in {self.out / CORRUPT_NAME}:")
            lines += [f"    {c['split']}/{c['file']}: {c['reason']}" for c in self.corrupt[:10]]
        if self.removed:
            lines.append(f"  removed {len(self.removed)} file(s) no longer selected (sample_rate changed)")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  ERROR: {e}" for e in self.errors]
        lines.append(f"  index: {self.out / INDEX_NAME}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

def _has_h5(d: Path) -> bool:
    return any(p.suffix == ".h5" and not p.name.startswith(".") for p in d.rglob("*.h5"))


def find_sources(srcs: Sequence[str | os.PathLike]) -> list[Source]:
    """Archives / extracted folders of the official splits among ``srcs`` (files or folders)."""
    found: list[Source] = []
    for s in srcs:
        p = Path(s).expanduser()
        if not p.exists():
            raise DataError(f"{p}: not found (expected a fastMRI archive such as knee_singlecoil_train.tar.xz, "
                            f"an extracted folder, or a folder holding them)")
        if "multicoil" in p.name.lower():
            raise DataError(f"{p}: multi-coil data are not supported; use the single-coil knee archives")
        if p.is_file():
            if not C.is_archive(p):
                raise DataError(f"{p}: not a tar archive ({', '.join(C.ARCHIVE_SUFFIXES[1:])}) or a folder")
            found.append(Source(p, "archive", split_of(p.name)))
            continue
        if any(c.suffix == ".h5" for c in p.iterdir()):
            sp = split_of(p.name) or split_of(p.parent.name)
            if sp is None:
                raise DataError(f"{p}: cannot tell which split these .h5 files belong to; the folder must be named "
                                f"like the official ones (singlecoil_train, knee_singlecoil_val, ...)")
            found.append(Source(p, "folder", sp))
            continue
        for c in sorted(p.iterdir()):
            if c.name.startswith(".") or "multicoil" in c.name.lower():
                continue
            sp = split_of(c.name)
            if c.is_file() and C.is_archive(c) and sp is not None:
                found.append(Source(c, "archive", sp))
            elif c.is_dir() and sp is not None and _has_h5(c):
                found.append(Source(c, "folder", sp))
    if not found:
        raise DataError(f"no fastMRI single-coil knee data in {', '.join(map(str, srcs))}: expected "
                        f"knee_singlecoil_{{train,val,test}}.tar.xz (or .tar.gz) or the folders extracted from them")
    # an extracted folder wins over the archive of the same split (linking is cheaper than extracting)
    folder_splits = {s.split for s in found if s.kind == "folder"}
    return [s for s in found if not (s.kind == "archive" and s.split in folder_splits)]


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

def _header_sizes(raw) -> tuple[tuple[int, int], tuple[int, int]]:
    import xml.etree.ElementTree as etree

    from fastmri.data.mri_data import et_query

    root = etree.fromstring(raw)
    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    return ((int(et_query(root, enc + ["x"])), int(et_query(root, enc + ["y"]))),
            (int(et_query(root, rec + ["x"])), int(et_query(root, rec + ["y"]))))


def verify_knee_file(path: str | os.PathLike, split: str, full: bool = False, name: Optional[str] = None) -> dict:
    """Verify one fastMRI single-coil knee file; return its index row.

    Raises:
        DataError: the file is unusable (the message says why).
    """
    path = Path(path)
    name = name or path.name
    info = check_file(path, require_target=split in ("train", "val"), full=full)
    notes = []
    try:
        with h5py.File(path, "r") as hf:
            ks = hf["kspace"]
            (ex, ey), (rx, ry) = _header_sizes(hf["ismrmrd_header"][()])
            if ks.dtype != np.complex64:
                notes.append(f"kspace dtype {ks.dtype} (fastMRI: complex64)")
            if ex != ks.shape[1]:
                notes.append(f"header encoded size {ex}x{ey} vs k-space {ks.shape[1]}x{ks.shape[2]}")
            esc = ""
            if "reconstruction_esc" in hf:
                tg = hf["reconstruction_esc"]
                if tuple(tg.shape[1:]) != (rx, ry):
                    raise DataError(f"{name}: reconstruction_esc is {tg.shape[1]}x{tg.shape[2]} but the header's recon "
                                    f"size is {rx}x{ry}")
                if rx > ks.shape[1] or ry > ks.shape[2]:
                    raise DataError(f"{name}: recon size {rx}x{ry} is larger than the k-space {ks.shape[1]}x{ks.shape[2]}")
                mid = ks.shape[0] // 2
                esc_val = _esc_nmse(ks[mid], tg[mid])
                esc = f"{esc_val:.3g}"
                if not np.isfinite(esc_val) or esc_val > ESC_NMSE_NOTE:
                    notes.append(f"reconstruction_esc differs from |crop(ifft2c(kspace))| (nmse {esc})")
            elif split in ("test", "challenge") and "mask" not in hf:
                notes.append("no mask dataset (test files carry the sampling mask)")
            pid = hf.attrs.get("patient_id", "")
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{name}: unreadable content ({type(e).__name__}: {e})") from None
    acq = info["acquisition"]
    if acq not in ACQUISITIONS:
        notes.append(f"acquisition {acq!r} (expected {' / '.join(ACQUISITIONS)})")
    return {
        "split": split, "file": name, "slices": info["slices"],
        "matrix": f"{info['kspace_shape'][1]}x{info['kspace_shape'][2]}", "recon": f"{rx}x{ry}",
        "acquisition": acq, "patient_id": pid.decode() if isinstance(pid, bytes) else str(pid),
        "esc_nmse": esc, "notes": "; ".join(notes),
    }


def _esc_nmse(kslice: np.ndarray, target: np.ndarray) -> float:
    import torch

    from kdmri_lib.mri.physics import centre_crop, ifft2c

    img = ifft2c(torch.from_numpy(np.asarray(kslice, dtype=np.complex64))).abs()
    img = centre_crop(img, target.shape).numpy()
    t = np.asarray(target, dtype=np.float64)
    den = float((t ** 2).sum())
    return float(((t - img) ** 2).sum() / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------

def prepare_fastmri(
    srcs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    config: Optional[FastMRIConfig] = None,
    force: bool = False,
    progress: bool = True,
    log: C.Log = print,
) -> FastMRIReport:
    """Verify, index and lay out fastMRI single-coil knee data (see the module docstring).

    Args:
        srcs: archive(s) and/or extracted folder(s), or folder(s) holding them.
        out: output folder (``out/singlecoil_{train,val,test}/``).
        config: sample rate, full check, link mode.
        force: process every source again even if the manifest says it is done.

    Returns:
        a :class:`FastMRIReport`; ``report.worked`` is False when nothing had to be done.

    Raises:
        DataError: no sources, unreadable or truncated archives (after keeping and indexing
            every good file), a source folder that is the output folder.
    """
    cfg = (config or FastMRIConfig()).validate()
    out = Path(out)
    t0 = time.perf_counter()
    C.check_out_dir(out, "fastmri")
    sources = find_sources([srcs] if isinstance(srcs, (str, os.PathLike)) else list(srcs))
    for s in sources:
        if s.kind == "folder" and s.split and (out / OUT_SPLITS[s.split]).resolve() == s.path.resolve():
            raise DataError(f"{s.path}: the source folder is the output folder; choose another --out "
                            f"(files are linked there, so no extra space is used)")
    manifest_path = out / C.MANIFESTS["fastmri"]
    old = C.read_manifest(manifest_path) or {}
    old_records = {r["path"]: r for r in old.get("sources", [])}
    report = FastMRIReport(out=out)
    records = []
    C.clean_partial(out)
    for s in sources:
        fp = C.fingerprint(s.path) if s.kind == "archive" else _folder_fingerprint(s.path)
        rec = old_records.pop(fp["path"], None)
        if rec and not force and _record_current(rec, fp, cfg, out):
            if cfg.full_check and not rec.get("full_checked"):
                rec = _recheck(rec, out, report, progress)
            else:
                report.counts["sources up to date"] += 1
            records.append(rec)
            continue
        report.worked = True
        if s.kind == "archive":
            new = _from_archive(s, fp, out, cfg, report, progress, log)
        else:
            new = _from_folder(s, fp, out, cfg, report, progress)
        if rec and new["complete"]:
            # files an earlier run took from this source that this run does not (sample_rate changed)
            now = {(r["split"], r["file"]) for r in new["rows"]}
            for r in rec.get("rows", []):
                p = out / OUT_SPLITS[r["split"]] / r["file"]
                if (r["split"], r["file"]) not in now and (p.exists() or p.is_symlink()):
                    p.unlink()
                    report.removed.append(f"{r['split']}/{r['file']}")
        records.append(new)
        if new.get("error"):
            report.errors.append(f"{new['path']}: {new['error']}")
    # sources of earlier runs not named this time stay indexed while their files are there
    for rec in old_records.values():
        rec["rows"] = [r for r in rec.get("rows", []) if (out / OUT_SPLITS[r["split"]] / r["file"]).exists()]
        if rec["rows"]:
            records.append(rec)

    rows = _write_index(out, records, report, cfg, manifest_path)
    unknown = [r for r in rows if r["notes"]]
    if unknown:
        report.notes.append(f"{len(unknown)} file(s) have notes in the index (unusual acquisition / sizes)")
    report.seconds = time.perf_counter() - t0
    if report.errors:
        raise DataError("some sources could not be read completely; the good files were kept and indexed, "
                        "run again after fixing them:\n  " + "\n  ".join(report.errors) + "\n" + report.summary())
    return report


def _write_index(out: Path, records: list, report: FastMRIReport, cfg: FastMRIConfig, manifest_path: Path) -> list:
    """The index (one row per kept file), the list of corrupt files and the manifest, when anything
    changed; returns the rows (also in ``report``)."""
    rows = sorted({(r["split"], r["file"]): r for rec in records for r in rec["rows"]}.values(),
                  key=lambda r: (list(OUT_SPLITS).index(r["split"]), r["file"]))
    corrupt = sorted({(c["split"], c["file"]): c for rec in records for c in rec["corrupt"]}.values(),
                     key=lambda c: (c["split"], c["file"]))
    report.rows, report.corrupt = rows, corrupt
    if report.worked or not (out / INDEX_NAME).exists():
        C.write_csv(out / INDEX_NAME, rows, INDEX_COLUMNS)
        C.write_text(out / CORRUPT_NAME, None if not corrupt else
                     "# fastMRI files that failed verification (not in the split folders)\n"
                     + "".join(f"{c['split']}/{c['file']}\t{c['source']}\t{c['reason']}\n" for c in corrupt))
        C.write_json(manifest_path, {"kind": "fastmri", "config": asdict(cfg), "sources": records})
    C.clean_partial(out)
    return rows


def _folder_fingerprint(path: Path) -> dict:
    files = sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in path.rglob("*.h5"))
    return {"path": str(path.resolve()), "files": C.digest(files)}


def _reason(e: Exception, path: Path, name: Optional[str] = None) -> str:
    """The message of a verification error without the leading file name (the index names the file)."""
    msg = str(e)
    for prefix in (f"{path}: ", f"{name or path.name}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg.replace(str(path), name or path.name)


def _record_current(rec: dict, fp: dict, cfg: FastMRIConfig, out: Path) -> bool:
    if rec.get("error") or not rec.get("complete"):
        return False
    if any(rec.get(k) != v for k, v in fp.items()):
        return False
    if rec.get("sample_rate") != cfg.sample_rate or rec.get("version") != cfg.version:
        return False
    return all((out / OUT_SPLITS[r["split"]] / r["file"]).exists() for r in rec["rows"])


def _new_record(s: Source, fp: dict, cfg: FastMRIConfig) -> dict:
    return {**fp, "kind": s.kind, "split": s.split, "sample_rate": cfg.sample_rate, "version": cfg.version,
            "full_checked": cfg.full_check, "complete": False, "rows": [], "corrupt": [], "error": None}


def _recheck(rec: dict, out: Path, report: FastMRIReport, progress: bool) -> dict:
    """Full check of files that an earlier run verified with the quick check only."""
    from tqdm.auto import tqdm

    report.worked = True
    good = []
    for r in tqdm(rec["rows"], desc="full check", disable=not progress, leave=False):
        p = out / OUT_SPLITS[r["split"]] / r["file"]
        try:
            good.append(verify_knee_file(p, r["split"], full=True))
        except DataError as e:
            p.unlink()
            rec["corrupt"].append({"split": r["split"], "file": r["file"], "source": rec["path"], "reason": _reason(e, p)})
            report.counts["corrupt"] += 1
    rec["rows"], rec["full_checked"] = good, True
    return rec


def _from_folder(s: Source, fp: dict, out: Path, cfg: FastMRIConfig, report: FastMRIReport, progress: bool) -> dict:
    from tqdm.auto import tqdm

    rec = _new_record(s, fp, cfg)
    files = sorted(p for p in s.path.rglob("*.h5") if not C.is_hidden(p.relative_to(s.path).as_posix()))
    files = [p for p in files if selected(p.name, cfg.sample_rate)]
    dest_dir = out / OUT_SPLITS[s.split]
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = C.partial_dir(out)
    for p in tqdm(files, desc=f"verify+link {s.path.name}", unit="file", disable=not progress):
        try:
            row = verify_knee_file(p, s.split, full=cfg.full_check)
        except DataError as e:
            rec["corrupt"].append({"split": s.split, "file": p.name, "source": str(p), "reason": _reason(e, p)})
            report.counts["corrupt"] += 1
            continue
        dest = dest_dir / p.name
        if dest.exists() and (os.path.samefile(dest, p) or dest.stat().st_size == p.stat().st_size):
            report.counts["kept"] += 1
        else:
            how = C.link_or_copy(p, dest, cfg.link, tmp_dir)
            report.counts[{"hardlink": "hard-linked", "symlink": "symlinked", "copy": "copied"}[how]] += 1
        rec["rows"].append(row)
    rec["complete"] = True
    return rec


def _from_archive(s: Source, fp: dict, out: Path, cfg: FastMRIConfig, report: FastMRIReport, progress: bool,
                  log: C.Log) -> dict:
    from tqdm.auto import tqdm

    rec = _new_record(s, fp, cfg)
    tmp_dir = C.partial_dir(out)
    size = s.path.stat().st_size
    seen = 0
    with open(s.path, "rb", buffering=0) as raw, \
            tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {s.path.name}",
                 disable=not progress) as bar:
        try:
            with tarfile.open(fileobj=C.ProgressReader(raw, bar), mode="r|*") as tf:
                for member in tf:
                    if not member.isfile() or not member.name.endswith(".h5"):
                        continue
                    rel = member.name
                    base = PurePosixPath(rel).name
                    if C.is_hidden(rel):
                        continue
                    split = s.split or split_of(str(PurePosixPath(rel).parent))
                    if split is None:
                        rec["corrupt"].append({"split": "?", "file": base, "source": f"{s.path}:{rel}",
                                               "reason": "cannot tell the split from the archive or folder name"})
                        continue
                    seen += 1
                    if not selected(base, cfg.sample_rate):
                        continue
                    dest = out / OUT_SPLITS[split] / base
                    if dest.exists() and dest.stat().st_size == member.size:
                        try:  # in place from an interrupted run (moved there only after verification)
                            rec["rows"].append(verify_knee_file(dest, split, full=cfg.full_check))
                            report.counts["kept"] += 1
                            continue
                        except DataError:
                            dest.unlink()
                    tmp = tmp_dir / f"{base}.part"
                    f = tf.extractfile(member)
                    with open(tmp, "wb") as w:
                        shutil.copyfileobj(f, w, C_CHUNK)
                    try:
                        row = verify_knee_file(tmp, split, full=cfg.full_check, name=base)
                    except DataError as e:
                        tmp.unlink()
                        rec["corrupt"].append({"split": split, "file": base, "source": f"{s.path}:{rel}",
                                               "reason": _reason(e, tmp, base)})
                        report.counts["corrupt"] += 1
                        continue
                    C.place(tmp, dest)
                    rec["rows"].append(row)
                    report.counts["extracted"] += 1
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # disk full, permissions: not the archive's fault
                raise DataError(f"{s.path}: extraction failed ({e})") from None
            rec["error"] = (f"the archive is truncated or corrupt after {seen} .h5 member(s) "
                            f"({type(e).__name__}: {e}); an interrupted download? the files before that point were kept")
            return rec
    if seen == 0:
        rec["error"] = "no .h5 files in this archive"
        return rec
    rec["complete"] = True
    return rec


C_CHUNK = 1 << 22
