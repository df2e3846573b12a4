#!/usr/bin/env python
"""`kdmri data demo` as a script: `python data_scripts/make_demo_data.py --help` (kdmri_lib.data_cli.demo)."""

import sys

from kdmri_lib.data_cli import demo as main

if __name__ == "__main__":
    sys.exit(main())
