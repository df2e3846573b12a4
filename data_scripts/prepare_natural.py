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

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from kdmri_lib.errors import KdmriError
    from kdmri_lib.real_data.natural import KNOWN_SOURCES, NaturalConfig, prepare_natural

    d = NaturalConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (images go to OUT/natural/train and OUT/natural/set5)")
    for name, label in (("flickr2k", "Flickr2K"), ("set5", "Set5")):
        p.add_argument(f"--{name}-src", help=f"local {label} archive (zip/tar/tar.gz) or folder")
        p.add_argument(f"--{name}-url", help=f"download {label} from this URL (default: the known mirror)")
        p.add_argument(f"--{name}-sha256", help=f"expected SHA-256 of the {label} download")
        p.add_argument(f"--skip-{name}", action="store_true", help=f"do not prepare {label}")
    p.add_argument("--n-train", type=int, default=d.n_train, help=f"Flickr2K images to draw (default {d.n_train})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the Flickr2K draw (default {d.seed})")
    p.add_argument("--max-size", type=int, default=None,
                   help="centre-crop images to at most this size (multiple of 16; default: whole image)")
    p.add_argument("--downloads", help="folder for downloaded archives (default OUT/downloads)")
    p.add_argument("--allow-unverified", action="store_true", help="download without a known checksum")
    p.add_argument("--list-sources", action="store_true", help="print the known public mirrors and exit")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.list_sources:
        for name, sources in KNOWN_SOURCES.items():
            for s in sources:
                print(f"{name:9s} {s.url}\n          layout {s.layout}; sha256 {s.sha256 or 'unknown (not verified here)'}; {s.note}")
        return 0
    if not args.out:
        p.error("--out is required")
    sets = [n for n in ("flickr2k", "set5") if not getattr(args, f"skip_{n}")]
    pick = lambda what: {n: getattr(args, f"{n}_{what}") for n in sets if getattr(args, f"{n}_{what}")}  # noqa: E731
    try:
        cfg = NaturalConfig(n_train=args.n_train, seed=args.seed, max_size=args.max_size)
        report = prepare_natural(args.out, sets, src=pick("src"), url=pick("url"), sha256=pick("sha256"), config=cfg,
                                 downloads=args.downloads, allow_unverified=args.allow_unverified, force=args.force,
                                 progress=not args.quiet)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
