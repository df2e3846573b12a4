#!/usr/bin/env python
"""Build the embedded demo data (fastMRI-format single-coil volumes + natural images), offline.

    python data_scripts/make_demo_data.py --out data/demo

Idempotent: a second run with the same options finds data/demo/manifest.json and does nothing.
The logic lives in kdmri_lib.demo_data.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kdmri_lib.demo_data import DemoConfig, build_demo_data
    from kdmri_lib.errors import KdmriError

    d = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    p.add_argument("--matrix", type=int, default=d.matrix, help=f"image size H = W, divisible by 16 (default {d.matrix})")
    p.add_argument("--stride", type=int, default=d.stride, help=f"take every n-th slice (default {d.stride})")
    p.add_argument("--snr-db", type=float, default=d.snr_db, help=f"noise level (default {d.snr_db} dB)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--no-natural", action="store_true", help="skip the natural-image set")
    p.add_argument("--head", choices=("whole", "brain"), default=d.head,
                   help="whole: synthetic scalp and skull around the brain, T1w + T2w; brain: the skull-stripped T1w template")
    p.add_argument("--force", action="store_true", help="rebuild even if the data are up to date")
    p.add_argument("--summary", action="store_true", help="print the summary only if the data are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        cfg = DemoConfig(matrix=args.matrix, stride=args.stride, snr_db=args.snr_db, seed=args.seed,
                         natural=not args.no_natural, head=args.head,
                         contrasts=d.contrasts if args.head == "whole" else ("T1w",))
        report = build_demo_data(args.out, cfg, force=args.force, progress=not args.quiet)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
