#!/usr/bin/env python
"""Build the embedded demo data (fastMRI-format single-coil volumes + natural images), offline.

    python data_scripts/make_demo_data.py --out data/demo

Idempotent: a second run with the same options finds data/demo/manifest.json and does nothing.
The logic lives in kdmri_lib.demo_data.
"""

import sys

from kdmri_lib.data_cli import demo as main

if __name__ == "__main__":
    sys.exit(main())
