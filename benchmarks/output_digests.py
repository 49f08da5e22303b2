"""Every output file of a build with its sha256, for comparing two builds byte for byte.

    python benchmarks/output_digests.py STORAGE_ROOT [--against OTHER.tsv]

Paths are relative to the storage root, with each content-addressed version
directory (20 hex digits) written as ``<version>``: a refactor that changes only
code versions (hence directory names) lists the same paths. Hidden files (the
build lock, staging leftovers) are skipped. ``--against`` prints the files whose
digest differs from an earlier listing, and the files only one side has.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

VERSION_DIR = re.compile(r"^[0-9a-f]{20}$")


def digests(root: Path) -> dict[str, str]:
    """Normalised relative path -> sha256 of every visible file under ``root``."""
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).parts
        if not f.is_file() or any(p.startswith(".") for p in rel):
            continue
        key = "/".join("<version>" if VERSION_DIR.match(p) else p for p in rel)
        out[key] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--against", type=Path, help="an earlier listing (this script's output) to compare with")
    args = ap.parse_args()
    mine = digests(args.root)
    if not args.against:
        for path, digest in mine.items():
            print(f"{digest}\t{path}")
        return 0
    theirs = dict(line.split("\t")[::-1] for line in args.against.read_text().splitlines() if line)
    differ = sorted(p for p in mine.keys() & theirs.keys() if mine[p] != theirs[p])
    only_new, only_old = sorted(mine.keys() - theirs.keys()), sorted(theirs.keys() - mine.keys())
    for label, paths in (("differs", differ), ("only in this build", only_new), ("only in the listing", only_old)):
        for p in paths:
            print(f"{label}: {p}")
    same = len(mine.keys() & theirs.keys()) - len(differ)
    print(f"{same} identical, {len(differ)} differ, {len(only_new)} only here, {len(only_old)} only in the listing")
    return 1 if differ or only_new or only_old else 0


if __name__ == "__main__":
    sys.exit(main())
