#!/usr/bin/env python
"""Flickr2K (400 images, seeded) and Set5 as grayscale (Y channel) PNGs for the 1:1 mixing.

    python data_scripts/prepare_natural.py --out data/natural --flickr2k-src Flickr2K.tar --set5-src Set5.zip
    python data_scripts/prepare_natural.py --out data/natural --set5-url URL --set5-sha256 HASH
    python data_scripts/prepare_natural.py --list-sources

Each set comes from a local archive or folder (--*-src), or is downloaded (resumable, SHA-256
verified) from --*-url or the known public mirror (--list-sources). No checksum is known here for
those mirrors: give --*-sha256, or --allow-unverified (prints the hash it got).
Output: OUT/natural/train (Flickr2K) and OUT/natural/set5; use `natural_dir=OUT/natural/train`.

Idempotent: a second run with the same options does nothing. Logic: kdmri_lib.real_data.natural.
"""

import sys

from kdmri_lib.data_cli import natural as main

if __name__ == "__main__":
    sys.exit(main())
