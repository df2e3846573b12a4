#!/usr/bin/env python
"""Verify, index and lay out the fastMRI single-coil knee data you downloaded (fastMRI licence).

    python data_scripts/prepare_fastmri.py --src ~/Downloads/fastmri --out data/knee
    python data_scripts/prepare_fastmri.py --src knee_singlecoil_train.tar.xz --src knee_singlecoil_val.tar.xz --out data/knee

--src: the official archives (knee_singlecoil_{train,val,test}.tar.xz or .tar.gz), the folders
extracted from them, or a folder holding either (repeat --src for several). Archives are streamed
into OUT (progress bar); extracted folders are hard-linked (or symlinked) into OUT, never copied.
Every file is verified; corrupt ones are skipped and listed in OUT/corrupt.txt. The index
OUT/fastmri_index.csv lists split, file, slices, k-space matrix, acquisition (CORPD_FBK /
CORPDFS_FBK), ... Output: OUT/singlecoil_train, OUT/singlecoil_val (held-out), OUT/singlecoil_test
(no targets). Use it as `data_dir=OUT` in the notebooks.

Idempotent: a second run with the same sources does nothing. Logic: kdmri_lib.real_data.fastmri_knee.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    from kdmri_lib.errors import KdmriError
    from kdmri_lib.real_data.fastmri_knee import FastMRIConfig, prepare_fastmri

    try:
        cfg = FastMRIConfig(sample_rate=args.sample_rate, full_check=args.full_check, link=args.link)
        report = prepare_fastmri(args.src, args.out, cfg, force=args.force, progress=not args.quiet)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
