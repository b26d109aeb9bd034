"""Make sure the IDX datasets graftnet uses are on disk; download them (verified) if not.

    python scripts/ensure_data.py fashion_mnist mnist     # find or download each
    python scripts/ensure_data.py --find-only fashion_mnist

Looks where graftnet.data looks (a folder under $GRAFTNET_DATA, /usr/share/datasets,
the user cache) and otherwise downloads into the user cache, checking every file's
sha256. `make data` runs this after trying the Debian package for Fashion-MNIST.
Exit status 0 when every dataset was found, 1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import sys

from graftnet.data import locate_idx
from graftnet.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="fashion_mnist and/or mnist")
    parser.add_argument("--find-only", action="store_true", help="do not download")
    args = parser.parse_args(argv)
    status = 0
    for name in args.names:
        try:
            print(f"{name}: {locate_idx(name, download=not args.find_only)}")
        except DataError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
