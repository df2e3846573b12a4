"""The data commands (``kdmri data demo|fastmri|brain-tumor|natural``; ``data_scripts/*.py`` are thin
shims over them): argument parsing and messages; the work is in :mod:`kdmri_lib.datasets.demo_data` and
:mod:`kdmri_lib.datasets.real_data`."""

from __future__ import annotations

import argparse
import sys

from kdmri_lib.core.errors import KdmriError


def _report(build) -> int:
    """Run ``build()`` (which returns a report with ``summary()``); print the summary (exit code 0) or
    the error of bad input (``error: ...`` on stderr, exit code 2)."""
    try:
        report = build()
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0

DEMO_DOC = """Build the embedded demo data (fastMRI-format single-coil volumes + natural images), offline.

    python data_scripts/make_demo_data.py --out data/demo

Idempotent: a second run with the same options finds data/demo/manifest.json and does nothing.
The logic lives in kdmri_lib.datasets.demo_data.
"""

def demo(argv=None) -> int:
    from kdmri_lib.datasets.demo_data import DemoConfig, build_demo_data

    d = DemoConfig()
    p = argparse.ArgumentParser(description=DEMO_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--matrix", type=int, default=d.matrix, help=f"image size H = W, divisible by 16 (default {d.matrix})")
    p.add_argument("--stride", type=int, default=d.stride, help=f"take every n-th slice (default {d.stride})")
    p.add_argument("--snr-db", type=float, default=d.snr_db, help=f"noise level (default {d.snr_db} dB)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--no-natural", action="store_true", help="skip the natural-image set")
    p.add_argument("--head", choices=("whole", "brain"), default=d.head,
                   help="whole: synthetic scalp and skull around the brain, T1w + T2w; brain: the skull-stripped T1w template")
    p.add_argument("--force", action="store_true", help="rebuild even if the data are up to date")
    p.add_argument("--summary", action="store_true", help="print the summary only if the data are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    def build():
        cfg = DemoConfig(matrix=args.matrix, stride=args.stride, snr_db=args.snr_db, seed=args.seed,
                         natural=not args.no_natural, head=args.head,
                         contrasts=d.contrasts if args.head == "whole" else ("T1w",))
        report = build_demo_data(args.out, cfg, force=args.force, progress=not args.quiet)
        return report

    return _report(build)



FASTMRI_DOC = """Verify, index and lay out the fastMRI single-coil knee data you downloaded (fastMRI licence).

    python data_scripts/prepare_fastmri.py --src ~/Downloads/fastmri --out data/knee
    python data_scripts/prepare_fastmri.py --src knee_singlecoil_train.tar.xz --src knee_singlecoil_val.tar.xz --out data/knee

--src: the official archives (knee_singlecoil_{train,val,test}.tar.xz or .tar.gz), the folders
extracted from them, or a folder holding either (repeat --src for several). Archives are streamed
into OUT (progress bar); extracted folders are hard-linked (or symlinked) into OUT, never copied.
Every file is verified; corrupt ones are skipped and listed in OUT/corrupt.txt. The index
OUT/fastmri_index.csv lists split, file, slices, k-space matrix, acquisition (CORPD_FBK /
CORPDFS_FBK), ... Output: OUT/singlecoil_train, OUT/singlecoil_val (held-out), OUT/singlecoil_test
(no targets). Use it as `data_dir=OUT` in the notebooks.

Idempotent: a second run with the same sources does nothing. Logic: kdmri_lib.datasets.real_data.fastmri_knee.
"""

def fastmri(argv=None) -> int:
    p = argparse.ArgumentParser(description=FASTMRI_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", action="append", required=True, metavar="PATH",
                   help="archive, extracted folder, or folder holding them (repeatable)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/knee")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="keep this fraction of the volumes of every split, chosen by file-name hash (default 1)")
    p.add_argument("--link", choices=("auto", "hardlink", "symlink", "copy"), default="auto",
                   help="extracted folders: how files get into OUT (default auto = hard link, else symlink)")
    p.add_argument("--full-check", action="store_true", help="also read every k-space sample (NaN/Inf check; slow)")
    p.add_argument("--force", action="store_true", help="process every source again")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    from kdmri_lib.datasets.real_data.fastmri_knee import FastMRIConfig, prepare_fastmri

    def build():
        cfg = FastMRIConfig(sample_rate=args.sample_rate, full_check=args.full_check, link=args.link)
        report = prepare_fastmri(args.src, args.out, cfg, force=args.force, progress=not args.quiet)
        return report

    return _report(build)



BRAIN_TUMOR_DOC = """Convert the Kaggle "Brain Tumor MRI Dataset" to fastMRI-format files with simulated k-space.

    python data_scripts/prepare_brain_tumor.py --src ~/Downloads/archive.zip --out data/brain

--src: the zip downloaded from Kaggle (Training/ and Testing/ with glioma, meningioma, notumor,
pituitary) or the folder it was extracted to; or --url (+ --sha256) of a copy you host.
The paper's split (seeded): 400 training images (100 per class) -> OUT/singlecoil_train, and
20 test images (5 per class) -> OUT/singlecoil_val. Each image: grayscale, padded to a square,
resized to MATRIX x MATRIX, k-space simulated as for the demo data (smooth phase, 40 dB SNR), one
single-slice .h5 file per image. Use it as `data_dir=OUT` in the notebooks.

Idempotent: a second run with the same options does nothing. Logic: kdmri_lib.datasets.real_data.brain_tumor.
"""

def brain_tumor(argv=None) -> int:
    from kdmri_lib.datasets.real_data.brain_tumor import BrainTumorConfig, prepare_brain_tumor

    d = BrainTumorConfig()
    p = argparse.ArgumentParser(description=BRAIN_TUMOR_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--src", help="Kaggle zip or extracted folder")
    src.add_argument("--url", help="download the zip from this URL first (needs --sha256 or --allow-unverified)")
    p.add_argument("--sha256", help="expected SHA-256 of the file at --url")
    p.add_argument("--allow-unverified", action="store_true", help="download --url without a checksum")
    p.add_argument("--out", required=True, help="output folder, e.g. data/brain")
    p.add_argument("--n-train", type=int, default=d.n_train,
                   help=f"training images, balanced over the 4 classes (default {d.n_train})")
    p.add_argument("--n-test-per-class", type=int, default=d.n_test_per_class,
                   help=f"test images per class (default {d.n_test_per_class})")
    p.add_argument("--matrix", type=int, default=d.matrix, help=f"image size, divisible by 16 (default {d.matrix})")
    p.add_argument("--snr-db", type=float, default=d.snr_db,
                   help=f"k-space noise level (default {d.snr_db:g} dB, as the demo data)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the split and of the simulation (default {d.seed})")
    p.add_argument("--downloads", help="folder for the downloaded zip (default OUT/downloads)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    def build():
        if args.url and not args.sha256 and not args.allow_unverified:
            raise KdmriError("--url needs --sha256 (or --allow-unverified to download without a checksum)")
        cfg = BrainTumorConfig(n_train=args.n_train, n_test_per_class=args.n_test_per_class, matrix=args.matrix,
                               snr_db=args.snr_db, seed=args.seed)
        report = prepare_brain_tumor(args.src, args.out, cfg, url=args.url, sha256=args.sha256,
                                     downloads=args.downloads, force=args.force, progress=not args.quiet)
        return report

    return _report(build)



NATURAL_DOC = """Flickr2K (400 images, seeded) and Set5 as grayscale (Y channel) PNGs for the 1:1 mixing.

    python data_scripts/prepare_natural.py --out data/natural --flickr2k-src Flickr2K.tar --set5-src Set5.zip
    python data_scripts/prepare_natural.py --out data/natural --set5-url URL --set5-sha256 HASH
    python data_scripts/prepare_natural.py --list-sources

Each set comes from a local archive or folder (--*-src), or is downloaded (resumable, SHA-256
verified) from --*-url or the known public mirror (--list-sources). No checksum is known here for
those mirrors: give --*-sha256, or --allow-unverified (prints the hash it got).
Output: OUT/natural/train (Flickr2K) and OUT/natural/set5; use `natural_dir=OUT/natural/train`.

Idempotent: a second run with the same options does nothing. Logic: kdmri_lib.datasets.real_data.natural.
"""

def natural(argv=None) -> int:
    from kdmri_lib.datasets.real_data.natural import KNOWN_SOURCES, NaturalConfig, prepare_natural

    d = NaturalConfig()
    p = argparse.ArgumentParser(description=NATURAL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (images go to OUT/natural/train and OUT/natural/set5)")
    for name, label in (("flickr2k", "Flickr2K"), ("set5", "Set5")):
        p.add_argument(f"--{name}-src", help=f"local {label} archive (zip/tar/tar.gz) or folder")
        p.add_argument(f"--{name}-url", help=f"download {label} from this URL (default: the known mirror)")
        p.add_argument(f"--{name}-sha256", help=f"expected SHA-256 of the {label} download")
        p.add_argument(f"--skip-{name}", action="store_true", help=f"do not prepare {label}")
    p.add_argument("--n-train", type=int, default=d.n_train, help=f"Flickr2K images to draw (default {d.n_train})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the Flickr2K draw (default {d.seed})")
    p.add_argument("--max-size", type=int, default=None,
                   help="centre-crop images to at most this size (multiple of 16; default: whole image)")
    p.add_argument("--downloads", help="folder for downloaded archives (default OUT/downloads)")
    p.add_argument("--allow-unverified", action="store_true", help="download without a known checksum")
    p.add_argument("--list-sources", action="store_true", help="print the known public mirrors and exit")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.list_sources:
        for name, sources in KNOWN_SOURCES.items():
            for s in sources:
                print(f"{name:9s} {s.url}\n          layout {s.layout}; sha256 {s.sha256 or 'unknown (not verified here)'}; {s.note}")
        return 0
    if not args.out:
        p.error("--out is required")
    sets = [n for n in ("flickr2k", "set5") if not getattr(args, f"skip_{n}")]
    pick = lambda what: {n: getattr(args, f"{n}_{what}") for n in sets if getattr(args, f"{n}_{what}")}  # noqa: E731

    def build():
        cfg = NaturalConfig(n_train=args.n_train, seed=args.seed, max_size=args.max_size)
        report = prepare_natural(args.out, sets, src=pick("src"), url=pick("url"), sha256=pick("sha256"), config=cfg,
                                 downloads=args.downloads, allow_unverified=args.allow_unverified, force=args.force,
                                 progress=not args.quiet)
        return report

    return _report(build)
