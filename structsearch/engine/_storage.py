"""Where a study lives: ``runs/<study>/journal.log`` by default, or any Optuna storage URL.

The default is Optuna's append-only journal file (:class:`optuna.storages.journal.JournalFileBackend`)
with its file lock: no server, safe for several local worker processes, and robust to
``kill -9`` (each record is one fsync'ed line; a torn last line left by a crash is cut off,
under the lock, before the study is opened again). ``optuna-dashboard runs/<study>/journal.log``
opens it as it is.

``storage`` may also be:

- a path to a journal file (``*.log``) or a directory (``<dir>/journal.log``);
- an SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://user@host/db``, ...) for
  :class:`optuna.storages.RDBStorage`, e.g. several workers on several machines;
- a ``redis://`` URL for Optuna's Redis journal (needs the ``redis`` package).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from structsearch.errors import StudyError

__all__ = [
    "DEFAULT_RUNS_DIR",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "StudyLocation",
    "check_study_name",
    "find_stale_trials",
    "list_studies",
    "load_existing_study",
    "open_storage",
    "run_dir",
]

DEFAULT_RUNS_DIR = Path("runs")
JOURNAL_NAME = "journal.log"
_UNNAMED_GRACE_S = 60
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


@dataclass
class StudyLocation:
    """An opened storage and how to name it to people (and to optuna-dashboard)."""

    storage: Any
    description: str
    run_dir: Path
    is_default: bool


def check_study_name(name: str) -> str:
    """A study name that is also a safe directory name.

    >>> check_study_name("demo")
    'demo'
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}", name):
        raise StudyError(f"study: expected a name of letters, digits, '.', '_' or '-' (max 128), got {name!r}")
    return name


def run_dir(study: str, runs_dir: str | Path | None = None) -> Path:
    """``runs/<study>/``: where the default storage, plots and exports of a study go."""
    return Path(runs_dir or DEFAULT_RUNS_DIR) / check_study_name(study)


def _repair_journal(path: Path, lock: Any) -> None:
    """Cut a torn last line (a crash mid-append) so later appends stay parseable."""
    if not path.exists() or path.stat().st_size == 0:
        return
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(lock), open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # find the last newline and truncate after it
        block, pos = 65536, size
        cut = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        f.truncate(cut)


def _journal(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyError(f"{path.parent}: cannot create the study directory ({err.strerror or err})") from None
    lock = JournalFileSymlinkLock(str(path))
    _repair_journal(path, lock)
    try:
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except (ValueError, OSError) as err:
        raise StudyError(f"{path}: cannot read the journal ({err})") from None


def open_storage(
    study: str, storage: str | None = None, runs_dir: str | Path | None = None, create: bool = True
) -> StudyLocation:
    """Open the storage of ``study``: the default journal in ``runs/<study>/`` or ``storage``."""
    directory = run_dir(study, runs_dir)
    if storage is None or storage == "":
        path = directory / JOURNAL_NAME
        if not create and not path.exists():
            raise StudyError(_missing_message(study, runs_dir))
        return StudyLocation(_journal(path), str(path), directory, True)
    if _URL.match(storage):
        if storage.startswith(("redis://", "rediss://", "unix://")):
            try:
                from optuna.storages import JournalStorage
                from optuna.storages.journal import JournalRedisBackend

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    backend = JournalRedisBackend(storage)
                return StudyLocation(JournalStorage(backend), _redact(storage), directory, False)
            except Exception as err:  # redis missing or unreachable
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise StudyError(f"storage {_redact(storage)}: cannot open the Redis journal ({first[:300]})") from None
        from optuna.storages import RDBStorage

        url = _with_driver(storage)
        try:
            rdb = RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except Exception as err:  # sqlalchemy raises many kinds; report one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StudyError(f"storage {_redact(storage)}: cannot connect ({first[:300]})") from None
        return StudyLocation(rdb, _redact(storage), directory, False)
    path = Path(storage)
    if path.is_dir() or storage.endswith(("/", os.sep)):
        path = path / JOURNAL_NAME
    if not create and not path.exists():
        raise StudyError(f"storage {storage}: no such journal file")
    return StudyLocation(_journal(path), str(path), directory, False)


def _with_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) through whichever driver is installed.

    >>> _with_driver("postgresql+psycopg2://u@h/db")
    'postgresql+psycopg2://u@h/db'
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return f"postgresql{sep}{rest}"


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def list_studies(runs_dir: str | Path | None = None) -> list[str]:
    base = Path(runs_dir or DEFAULT_RUNS_DIR)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / JOURNAL_NAME).exists())


def _missing_message(study: str, runs_dir: str | Path | None) -> str:
    have = list_studies(runs_dir)
    where = Path(runs_dir or DEFAULT_RUNS_DIR)
    listing = f"; studies there: {', '.join(have)}" if have else f"; {where}/ holds no studies"
    return f"no study {study!r} in {where / study}{listing} (pass --storage URL for a study elsewhere)"


def load_existing_study(
    study: str, storage: str | None = None, runs_dir: str | Path | None = None
) -> tuple[optuna.Study, StudyLocation]:
    """Open a study that must exist (for report and export)."""
    location = open_storage(study, storage, runs_dir, create=False)
    try:
        loaded = optuna.load_study(study_name=study, storage=location.storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(location.storage)]
        listing = f"; it holds: {', '.join(names)}" if names else "; it holds no studies"
        raise StudyError(f"no study {study!r} in {location.description}{listing}") from None
    return loaded, location


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_stale_trials(study: optuna.Study, own_worker: str, grace_s: float | None = None) -> list[FrozenTrial]:
    """RUNNING trials whose worker is gone.

    A trial records ``worker = host:pid`` when it starts and refreshes ``heartbeat`` (unix
    time) every ``HEARTBEAT_S`` seconds while it runs. It is stale when its worker is on this
    host and no longer alive, or (any host) when its last sign of life is older than
    ``grace_s`` (default ``STALE_AFTER_S``); one that never named its worker, after a minute.
    """
    import socket
    import time

    grace_s = STALE_AFTER_S if grace_s is None else grace_s
    host = socket.gethostname()
    now = time.time()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker == own_worker:
            continue
        started = t.datetime_start.timestamp() if t.datetime_start is not None else now
        alive_at = float(t.user_attrs.get("heartbeat", started))
        if worker is None:
            if now - started > _UNNAMED_GRACE_S:
                stale.append(t)
            continue
        w_host, _, w_pid = str(worker).rpartition(":")
        if (w_host == host and w_pid.isdigit() and not _pid_alive(int(w_pid))) or now - alive_at > grace_s:
            stale.append(t)
    return stale
