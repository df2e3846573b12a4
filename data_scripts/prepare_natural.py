#!/usr/bin/env python
"""`kdmri data natural` as a script: `python data_scripts/prepare_natural.py --help` (kdmri_lib.data_cli.natural)."""

import sys

from kdmri_lib.data_cli import natural as main

if __name__ == "__main__":
    sys.exit(main())
