"""Where a study's files live: a local (or shared-filesystem) folder, or a bucket (s3://, gs://).

    storage: ~/archstudy-results          # the study folder is ~/archstudy-results/<name>
    storage: s3://my-bucket/results       # the study folder is s3://my-bucket/results/<name>

With a local path everything is written in place. With a bucket, Ray Tune writes the experiment
folders (every trial's results and checkpoints) straight to the bucket, from whichever node runs the
trial, and the driver keeps the study's own files in a local mirror (`~/.cache/archstudy/mirror/...`,
or under $ARCHSTUDY_CACHE): spec.yaml, study.json, optuna.db (SQLite needs a local file), the tables
and the analysis. The mirror is uploaded whenever it changes in a way `resume` needs (the study
state, optuna.db after every finished trial, the tables after each phase), so a driver on another
machine can `archstudy resume s3://...` the study. optuna.db is uploaded as a SQLite backup copy
(it is in WAL mode, study/optuna_storage.py, so the file alone may lack the latest commits). W&B offline runs are written on the trial's
node and uploaded to <study>/wandb/ when the trial ends.

The buckets are reached through pyarrow's filesystems (what Ray uses): credentials and endpoints
come from the usual environment (AWS_* variables or instance roles; GOOGLE_APPLICATION_CREDENTIALS).
pyarrow's URI options also work, for S3-compatible stores and emulators; the study's folders go
before them:

    storage: "s3://results?endpoint_override=minio.lan:9000&scheme=http"   # -> s3://results/<name>?...
    storage: "gs://anonymous@results?endpoint_override=127.0.0.1:4443&scheme=http"   # no credentials
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .contract import OPTUNA_DB, RESULT_FILES
from .errors import StudyError
from .files import first_line, sqlite_snapshot


def is_uri(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and re.match(r"(s3|gs)://", location) is not None


def normalised(uri: str) -> str:
    """The bucket URI without a trailing '/' before its options (if any)."""
    base, sep, options = uri.partition("?")
    return base.rstrip("/") + sep + options


def join(uri: str, *parts: str) -> str:
    """uri/part/part, keeping the URI's options (?key=value&...) at the end."""
    base, sep, options = normalised(uri).partition("?")
    return "/".join([base, *parts]) + sep + options


def mirror_of(uri: str) -> Path:
    """The local mirror folder of a study in a bucket (named by scheme, bucket and path only)."""
    root = Path(os.environ.get("ARCHSTUDY_CACHE", Path.home() / ".cache" / "archstudy")).expanduser()
    scheme, rest = normalised(uri).partition("?")[0].split("://", 1)
    return root / "mirror" / scheme / rest.rpartition("@")[2].strip("/")   # no user@


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a bucket URI."""
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:   # pyarrow raises ArrowInvalid/OSError with multi-line messages
        raise StudyError(f"storage: {uri!r} cannot be opened ({type(e).__name__}: "
                         f"{first_line(e)})") from None


class Store:
    """A study folder: `local` is where this process reads and writes the study's own files;
    `remote` is the bucket URI (None for local storage); `ray_path` is what Ray Tune is given."""

    def __init__(self, out: Path | str):
        self.remote = normalised(out) if is_uri(out) else None
        self.local = mirror_of(out) if self.remote else Path(out)
        if self.remote:
            self.fs, self.root = filesystem(self.remote)

    @property
    def ray_path(self) -> str:
        return self.remote or str(self.local)

    def phase_path(self, phase: str) -> str:
        return join(self.remote, phase) if self.remote else str(self.local / phase)

    def __str__(self) -> str:
        return self.ray_path

    # ---- bucket operations (no-ops for local storage) ----
    def exists(self, name: str) -> bool:
        if not self.remote:
            return (self.local / name).exists()
        import pyarrow.fs as pafs
        return self.fs.get_file_info(f"{self.root}/{name}").type != pafs.FileType.NotFound

    def upload(self, *names: str) -> None:
        """Copy the named files or folders of the mirror to the bucket (those that exist)."""
        if not self.remote:
            return
        for name in names:
            source = self.local / name
            if not source.exists():
                continue
            if name == OPTUNA_DB:   # in WAL mode the file alone may lack the latest commits
                with sqlite_snapshot(source) as copy:
                    self._put(copy, name)
            else:
                self._put(source, name)

    def _put(self, source: Path, name: str) -> None:
        import pyarrow.fs as pafs
        pafs.copy_files(str(source), f"{self.root}/{name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def download(self, *names: str) -> None:
        """Copy the named files or folders from the bucket into the mirror (those that exist)."""
        if not self.remote:
            return
        import pyarrow.fs as pafs
        for name in names:
            if self.exists(name):
                target = self.local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if name == OPTUNA_DB:   # SQLite would apply the replaced database's WAL to this one
                    for stale in (f"{name}-wal", f"{name}-shm"):
                        (self.local / stale).unlink(missing_ok=True)
                pafs.copy_files(f"{self.root}/{name}", str(target), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())

    def fetch_results(self, phase: str) -> None:
        """Download every trial's params.json and result.json (not its checkpoints) and Tune's saved
        experiment state (the trials' final statuses) of a phase, so the tables can be built from
        the mirror."""
        if not self.remote:
            return
        import pyarrow.fs as pafs
        selector = pafs.FileSelector(f"{self.root}/{phase}", recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[len(self.root) + 1:]
            if (relative.count("/") == 2 and info.base_name in RESULT_FILES   # <phase>/<trial>/<file>
                    or relative.count("/") == 1 and info.base_name.startswith("experiment_state-")):
                self.download(relative)


def upload_folder(folder: str | os.PathLike, uri: str) -> None:
    """Copy a local folder to a bucket URI (used on worker nodes for W&B offline runs)."""
    import pyarrow.fs as pafs
    fs, path = filesystem(uri)
    pafs.copy_files(str(folder), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
