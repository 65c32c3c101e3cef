"""Where a study lives: ``runs/<study>/journal.log`` by default, or any Optuna storage URL.

The default is Optuna's append-only journal file (:class:`optuna.storages.journal.JournalFileBackend`)
with its file lock: no server, safe for several local worker processes, and robust to
``kill -9`` (each record is one fsync'ed line; a torn last line left by a crash is cut off,
under the lock, before the study is opened again). ``optuna-dashboard runs/<study>/journal.log``
opens it as it is. A file that is not a journal is never touched (``_journal``).

``search`` opens a storage for writing (``create=True``); ``report`` and ``export`` open it
read-only: nothing is created, locked, repaired or written.

``storage`` may also be:

- a path to a journal file (``*.log``) or a directory (``<dir>/journal.log``);
- an SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://user@host/db``, ...) for
  :class:`optuna.storages.RDBStorage`, e.g. several workers on several machines (timeouts,
  schema creation and Optuna's heartbeat: ``_rdb``, ``_heartbeat``);
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

from structsearch.engine._heartbeat import RequeueStale, heartbeat_settings
from structsearch.engine._journal import open_journal
from structsearch.engine._rdb import open_rdb
from structsearch.errors import StudyError

__all__ = [
    "DEFAULT_RUNS_DIR",
    "StudyLocation",
    "check_study_name",
    "list_studies",
    "load_existing_study",
    "open_storage",
    "run_dir",
]

DEFAULT_RUNS_DIR = Path("runs")
JOURNAL_NAME = "journal.log"
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
    if runs_dir is not None and not isinstance(runs_dir, (str, os.PathLike)):
        raise StudyError(f"runs_dir: expected a folder path, got {runs_dir!r}")
    return Path(runs_dir or DEFAULT_RUNS_DIR) / check_study_name(study)


def open_storage(
    study: str, storage: str | None = None, runs_dir: str | Path | None = None, create: bool = True
) -> StudyLocation:
    """Open the storage of ``study``: the default journal in ``runs/<study>/`` or ``storage``."""
    directory = run_dir(study, runs_dir)
    if storage is not None and not isinstance(storage, (str, os.PathLike)):
        raise StudyError(f"storage: expected a journal path or a database URL, got {storage!r}")
    storage = None if storage is None else os.fspath(storage)
    if storage is None or storage == "":
        path = directory / JOURNAL_NAME
        if not create and not path.exists():
            raise StudyError(_missing_message(study, runs_dir))
        return StudyLocation(open_journal(path, writable=create), str(path), directory, True)
    if _URL.match(storage):
        if storage.startswith(("redis://", "rediss://", "unix://")):
            try:
                from optuna.storages import JournalStorage
                from optuna.storages.journal import JournalRedisBackend

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    backend = JournalRedisBackend(_with_socket_timeouts(storage))
                return StudyLocation(JournalStorage(backend), _redact(storage), directory, False)
            except Exception as err:  # redis missing or unreachable
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise StudyError(f"storage {_redact(storage)}: cannot open the Redis journal ({first[:300]})") from None
        heartbeat = heartbeat_settings() if create else None
        rdb = open_rdb(_with_driver(storage), _redact(storage), create, heartbeat, RequeueStale())
        return StudyLocation(rdb, _redact(storage), directory, False)
    path = Path(storage)
    if path.is_dir() or storage.endswith(("/", os.sep)):
        path = path / JOURNAL_NAME
    if not create and not path.exists():
        raise StudyError(f"storage {storage}: no such journal file")
    return StudyLocation(open_journal(path, writable=create), str(path), directory, False)


def _with_socket_timeouts(url: str) -> str:
    """A Redis URL with connect and read timeouts unless it sets its own.

    >>> _with_socket_timeouts("redis://h:6379/0")
    'redis://h:6379/0?socket_connect_timeout=3&socket_timeout=60'
    """
    from structsearch.engine._rdb import CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_S

    extra = [
        f"{key}={value}"
        for key, value in (("socket_connect_timeout", CONNECT_TIMEOUT_S), ("socket_timeout", STATEMENT_TIMEOUT_S))
        if f"{key}=" not in url
    ]
    return url + ("&" if "?" in url else "?") + "&".join(extra) if extra else url


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
    except StudyError:
        raise
    except Exception as err:  # a storage that fails or times out mid-read: one line
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        kind = type(err).__name__
        raise StudyError(f"storage {location.description}: cannot read study {study!r} ({kind}: {first})") from None
    return loaded, location
