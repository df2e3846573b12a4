#!/usr/bin/env python
"""`kdmri data fastmri` as a script: `python data_scripts/prepare_fastmri.py --help` (kdmri_lib.data_cli.fastmri)."""

import sys

from kdmri_lib.data_cli import fastmri as main

if __name__ == "__main__":
    sys.exit(main())
