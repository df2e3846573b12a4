#!/usr/bin/env python
"""Convert the Kaggle "Brain Tumor MRI Dataset" to fastMRI-format files with simulated k-space.

    python data_scripts/prepare_brain_tumor.py --src ~/Downloads/archive.zip --out data/brain

--src: the zip downloaded from Kaggle (Training/ and Testing/ with glioma, meningioma, notumor,
pituitary) or the folder it was extracted to; or --url (+ --sha256) of a copy you host.
The paper's split (seeded): 400 training images (100 per class) -> OUT/singlecoil_train, and
20 test images (5 per class) -> OUT/singlecoil_val. Each image: grayscale, padded to a square,
resized to MATRIX x MATRIX, k-space simulated as for the demo data (smooth phase, 40 dB SNR), one
single-slice .h5 file per image. Use it as `data_dir=OUT` in the notebooks.

Idempotent: a second run with the same options does nothing. Logic: kdmri_lib.real_data.brain_tumor.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kdmri_lib.errors import KdmriError
    from kdmri_lib.real_data.brain_tumor import BrainTumorConfig, prepare_brain_tumor

    d = BrainTumorConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    try:
        if args.url and not args.sha256 and not args.allow_unverified:
            raise KdmriError("--url needs --sha256 (or --allow-unverified to download without a checksum)")
        cfg = BrainTumorConfig(n_train=args.n_train, n_test_per_class=args.n_test_per_class, matrix=args.matrix,
                               snr_db=args.snr_db, seed=args.seed)
        report = prepare_brain_tumor(args.src, args.out, cfg, url=args.url, sha256=args.sha256,
                                     downloads=args.downloads, force=args.force, progress=not args.quiet)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
