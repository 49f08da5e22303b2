"""Source globs, matched the way Python's ``glob(recursive=True)`` reads them, without its hazards.

``glob.glob`` follows symbolic links to directories into loops (a link to an ancestor under
a ``**`` glob walks until paths get too long, for minutes with a few of them). ``find_files``
walks the tree once, following links but never into a directory it has already seen (by
device and inode), and keeps the files that ``glob_regex`` matches.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path


def glob_regex(pattern: str) -> re.Pattern:
    """A glob as Python's ``glob(recursive=True)`` reads it: ``*`` and ``?`` stay inside one path
    component, ``**`` as a whole component spans any number of directories, ``[...]`` is a class,
    and a wildcard never matches a name that starts with a dot (``.dagster``)."""
    out, parts = [], pattern.split("/")
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        if part == "**":
            out.append(r"(?:(?!\.)[^/]*/)*(?!\.)[^/]*" if last else r"(?:(?!\.)[^/]*/)*")
            continue
        piece, i = (r"(?!\.)" if part[:1] in ("*", "?", "[") else ""), 0
        while i < len(part):
            c = part[i]
            if c == "*":
                piece += "[^/]*"
            elif c == "?":
                piece += "[^/]"
            elif c == "[" and (end := part.find("]", i + 2 + (part[i + 1:i + 2] == "!"))) > 0:
                negate = part[i + 1] == "!"
                piece += "[" + ("^" if negate else "") + part[i + 1 + negate:end].replace("\\", "\\\\") + "]"
                i = end
            else:
                piece += re.escape(c)
            i += 1
        out.append(piece + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z")


def glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard."""
    base = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return str(Path(*base)) if base else "."


def find_files(pattern: str) -> list[Path]:
    """Every regular file an absolute glob matches, sorted, each once; loops of links are cut."""
    if not glob.has_magic(pattern):
        return [Path(pattern)] if os.path.isfile(pattern) else []
    base = glob_base(pattern)
    regex = glob_regex(pattern)
    depth = None if "**" in pattern else len(Path(pattern).parts) - len(Path(base).parts)
    seen: set[tuple[int, int]] = set()
    found = []
    for root, dirs, files in os.walk(base, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a loop, or a second way in
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        level = len(Path(root).parts) - len(Path(base).parts)
        if depth is not None and level >= depth - 1:
            dirs[:] = []
        found += [Path(root, f) for f in files
                  if regex.match(os.path.join(root, f)) and os.path.isfile(os.path.join(root, f))]
    return sorted(set(found))
