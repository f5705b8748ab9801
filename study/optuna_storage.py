"""How archstudy opens a study's Optuna database (`<out>/optuna.db`, SQLite), so that a reader
beside a running study (`archstudy dashboard`, optuna-dashboard, a notebook) never breaks it.

    storage = optuna_storage("sqlite:////abs/path/optuna.db")   # the study's own: may write
    storage = reader_storage("sqlite:////abs/path/optuna.db")   # a reader's: changes nothing

- WAL journal mode (set once; it is kept in the database file): a reader sees the last commit and
  holds its read transaction for as long as it likes without blocking the study's writes, nor they
  its reads. In the default (rollback) mode a commit waits for every reader to finish, and gives up
  with "database is locked" after the busy timeout.
- a busy timeout of BUSY_TIMEOUT_S: a connection that meets a lock (two writers, a checkpoint)
  waits for it that long rather than failing at once.

With WAL, committed transactions can sit in `optuna.db-wal` until SQLite copies them back into
optuna.db (a checkpoint); a copy of optuna.db alone then misses them. The bucket upload copies it
with SQLite's backup API instead (studyfiles/files.py sqlite_snapshot).
"""
from __future__ import annotations

import sqlite3
from contextlib import closing

import optuna
from sqlalchemy.engine import make_url

BUSY_TIMEOUT_S = 60   # seconds a connection waits for a lock before "database is locked"


def engine_kwargs() -> dict:
    return {"connect_args": {"timeout": BUSY_TIMEOUT_S}}


def use_wal(url: str) -> None:
    """Put the SQLite database at `url` into WAL mode (creating the file if need be). Done with
    sqlite3 before Optuna opens it, since RDBStorage connects as it is created (a SQLAlchemy
    connect event could only be added after that first connection). A database that cannot be
    switched (a lock held past the timeout, a file system without shared memory) stays as it is:
    the study still runs, with readers able to delay its writes."""
    path = make_url(url).database
    if not url.startswith("sqlite") or not path or path == ":memory:":
        return
    try:
        with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as con:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's Optuna storage at `url` (sqlite:///...): WAL mode and a busy timeout, tables
    created when missing. Every archstudy process that writes optuna.db opens it here."""
    use_wal(url)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs())


def reader_storage(url: str) -> optuna.storages.RDBStorage:
    """A reader's Optuna storage at `url`: a busy timeout; it neither creates tables nor changes
    the journal mode (the study's process decides that). Raises what RDBStorage raises on a file
    that is not an Optuna database (sqlalchemy's OperationalError, ...)."""
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(), skip_table_creation=True)
