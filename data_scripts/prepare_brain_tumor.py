#!/usr/bin/env python
"""`kdmri data brain-tumor` as a script: `python data_scripts/prepare_brain_tumor.py --help` (kdmri_lib.data_cli.brain_tumor)."""

import sys

from kdmri_lib.data_cli import brain_tumor as main

if __name__ == "__main__":
    sys.exit(main())
