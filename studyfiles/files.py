"""Writing a study's files whole or not at all, and errors cut to one line.

    write_atomic(folder / "study.json", text)     # readers see the old file or the new one
    write_parquet(frame, folder / "trials.parquet")
    first_line(error)                              # for messages that must stay one line
    with sqlite_snapshot(folder / "optuna.db") as copy: ...   # a whole copy of a live database
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing, contextmanager
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


@contextmanager
def sqlite_snapshot(path: Path, timeout: float = 60):
    """A complete copy of the SQLite database at `path`, as a reader sees it now: a temporary file
    beside it, removed when the block ends. In WAL mode (study/optuna_storage.py) committed
    transactions can still sit in `<path>-wal`, which a copy of the file alone would miss; SQLite's
    backup API copies them too, without blocking the database's writer. `timeout`: seconds to wait
    for a lock."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.snapshot-")
    os.close(fd)
    try:
        with closing(sqlite3.connect(path, timeout=timeout)) as source, \
                closing(sqlite3.connect(name, timeout=timeout)) as copy:
            source.backup(copy)
        yield Path(name)
    finally:
        os.unlink(name)
