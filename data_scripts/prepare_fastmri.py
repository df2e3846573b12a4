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

import sys

from kdmri_lib.data_cli import fastmri as main

if __name__ == "__main__":
    sys.exit(main())
