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

import sys

from kdmri_lib.data_cli import brain_tumor as main

if __name__ == "__main__":
    sys.exit(main())
