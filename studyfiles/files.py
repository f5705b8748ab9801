"""Writing a study's files whole or not at all, and errors cut to one line.

    write_atomic(folder / "study.json", text)     # readers see the old file or the new one
    write_parquet(frame, folder / "trials.parquet")
    first_line(error)                              # for messages that must stay one line
"""
from __future__ import annotations

import os
from pathlib import Path


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")   # same folder, so os.replace is atomic
    write(tmp)
    os.replace(tmp, path)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` through a temporary file and a rename."""
    if isinstance(data, bytes):
        _replace(Path(path), lambda tmp: tmp.write_bytes(data))
    else:
        _replace(Path(path), lambda tmp: tmp.write_text(data, encoding="utf-8"))


def write_parquet(frame, path: Path) -> None:
    """A pandas DataFrame to a parquet file (no index), atomically."""
    _replace(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def first_line(error: BaseException | str, limit: int = 160) -> str:
    """The first line of an error's message (or of a text), at most `limit` characters: libraries
    such as pyarrow and Ray raise multi-line messages that would break a one-line error."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""
