"""Reading a ``SourceLossMonitor`` log, without torch: the next-phase sensor and proposal read it in
processes that never train (the Dagster code server), where importing torch would cost seconds."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: str | Path) -> list[dict]:
    """The records of a monitor's log, without a trailing partial line (a write cut by a crash).
    Raises ValueError naming the file and line for a damaged line before the last."""
    return [record for _, record in _read_lines(Path(path))[1]]


def _read_lines(path: Path) -> tuple[bytes, list[tuple[bytes, dict]]]:
    """The file's bytes and its complete records, each with its line's exact bytes (so a
    rewrite keeps them byte for byte)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int) \
                    or not isinstance(record.get("sources"), dict):
                raise ValueError("not a record")
        except ValueError as e:
            if last:
                break
            raise ValueError(f"{path}: line {number} is not a monitor record ({e}); the log is damaged") from None
        if last and not data.endswith(b"\n"):
            break
        out.append((raw + b"\n", record))
    return data, out
