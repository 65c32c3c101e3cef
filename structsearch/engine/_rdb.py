"""SQLAlchemy storages (PostgreSQL, MySQL, SQLite): bounded waits, serialised schema creation, read-only opens.

- **No hangs.** Every connection gets a connect timeout and a statement timeout
  (:data:`CONNECT_TIMEOUT_S`, :data:`STATEMENT_TIMEOUT_S`; PostgreSQL also TCP keepalives), so an
  endpoint that accepts and never answers is an error within seconds. Values given in the URL's
  query (``?connect_timeout=20``) win.
- **Fresh databases.** Workers started in the same instant on an empty database all try to
  create Optuna's tables; on PostgreSQL that collides in the catalogue (``UniqueViolation`` on
  ``pg_type``). Schema creation runs under a PostgreSQL advisory lock, and any storage retries a
  creation that lost such a race.
- **Read-only.** ``report`` and ``export`` open with ``skip_table_creation``: a database
  without Optuna's tables is an error, never created. An SQLite file must exist and be one.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structsearch.errors import StudyError

__all__ = ["CONNECT_TIMEOUT_S", "STATEMENT_TIMEOUT_S", "engine_kwargs", "open_rdb"]

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_S = 60
_SCHEMA_LOCK = 0x5354525543540001  # pg_advisory_lock key: "STRUCT" + 1
_RACE_MARKERS = ("already exists", "duplicate key", "uniqueviolation", "unique constraint", "database is locked")


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def engine_kwargs(url: str) -> dict[str, Any]:
    """``create_engine`` arguments with connect and statement timeouts for ``url``'s dialect.

    >>> engine_kwargs("sqlite:///x.db")["connect_args"]
    {'timeout': 60}
    >>> engine_kwargs("postgresql://u@h/db?connect_timeout=20")["connect_args"]["connect_timeout"]
    '20'
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    given = dict(parsed.query)
    wanted: dict[str, Any] = {}
    if dialect == "postgresql":
        ms = STATEMENT_TIMEOUT_S * 1000
        wanted = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
    elif dialect == "mysql":
        wanted = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": STATEMENT_TIMEOUT_S}
    elif dialect == "sqlite":
        wanted = {"timeout": STATEMENT_TIMEOUT_S}  # how long to wait for another writer's lock
    connect_args = {k: v for k, v in wanted.items() if k not in given}
    connect_args.update({k: v for k, v in given.items() if k in wanted})
    return {"pool_pre_ping": True, "pool_timeout": STATEMENT_TIMEOUT_S, "connect_args": connect_args}


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _check_sqlite(url: str, writable: bool) -> None:
    """An SQLite URL must name an SQLite file (or, for ``search``, a new one)."""
    from sqlalchemy.engine import make_url

    from structsearch.engine._journal import identify

    path = _sqlite_path(url)
    if path is None:
        if make_url(url).get_backend_name() == "sqlite":  # sqlite://, sqlite:///, sqlite:///:memory:
            raise StudyError(
                f"storage {url}: name an SQLite file (sqlite:///path/to/study.db); an in-memory one keeps nothing"
            )
        return
    if not path.exists():
        if not writable:
            raise StudyError(f"storage {url}: no such database file {path}")
        return
    kind = identify(path)
    if path.stat().st_size and (kind is None or not kind.startswith("an SQLite database")):
        what = "an Optuna journal: pass the path without sqlite:///" if kind is None else kind
        raise StudyError(f"storage {url}: {path} is not an SQLite database, it is {what}")
    tables = _sqlite_tables(path)
    if tables and "studies" not in tables:  # someone's own database: Optuna would add its tables to it
        raise StudyError(
            f"storage {url}: {path} is an SQLite database of something else (tables {', '.join(sorted(tables)[:5])}); "
            "it was left untouched"
        )


def _sqlite_tables(path: Path) -> set[str]:
    """The table names of an SQLite file, read without writing to it (an unreadable one: none)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return set()


@contextmanager
def _schema_lock(url: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while Optuna creates (or checks) its tables."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK})
    finally:
        engine.dispose()


def open_rdb(
    url: str,
    shown: str,
    writable: bool,
    heartbeat: tuple[int, int] | None = None,
    on_stale: Callable[..., None] | None = None,
) -> Any:
    """An :class:`optuna.storages.RDBStorage` on ``url`` (``shown``: the URL with its password hidden).

    ``heartbeat`` = (interval, grace period) in seconds and ``on_stale`` turn on Optuna's
    heartbeat: a running trial with no heartbeat for the grace period is failed and passed to
    ``on_stale`` by :func:`optuna.storages.fail_stale_trials`.
    """
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import make_url

    try:
        make_url(url)
    except (ValueError, sqlalchemy.exc.ArgumentError) as err:
        raise StudyError(f"storage {shown}: not a valid database URL ({_first_line(err)})") from None
    _check_sqlite(url, writable)
    kwargs = engine_kwargs(url)
    options: dict[str, Any] = {"engine_kwargs": kwargs, "skip_table_creation": not writable}
    if heartbeat is not None and writable:
        options.update(
            heartbeat_interval=heartbeat[0], grace_period=heartbeat[1], heartbeat_stale_trial_callback=on_stale
        )
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                with _schema_lock(url, kwargs):
                    return RDBStorage(url, **options)
        except sqlalchemy.exc.OperationalError as err:
            message = _first_line(err)
            if writable and "database is locked" in message.lower() and attempt < 5:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise StudyError(f"storage {shown}: cannot connect ({message})") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            message = _first_line(err)
            if writable and any(m in message.lower() for m in _RACE_MARKERS) and attempt < 5:
                time.sleep(0.2 * (attempt + 1))  # another worker created the schema meanwhile
                continue
            if not writable and ("does not exist" in message or "no such table" in message):
                raise StudyError(f"storage {shown}: holds no Optuna study tables ({message})") from None
            raise StudyError(f"storage {shown}: cannot create or read Optuna's tables ({message})") from None
        except ImportError as err:
            raise StudyError(f"storage {shown}: no database driver ({_first_line(err.__cause__ or err)})") from None
        except Exception as err:  # sqlalchemy and the drivers raise many kinds; report one line
            cause = err.__cause__ or err.__context__  # optuna wraps the driver's error in StorageInternalError
            if not writable and cause is not None and any(m in str(cause) for m in ("no such table", "does not exist")):
                raise StudyError(f"storage {shown}: holds no Optuna study tables ({_first_line(cause)})") from None
            raise StudyError(f"storage {shown}: cannot open ({type(err).__name__}: {_first_line(err)})") from None
    raise AssertionError("unreachable")  # pragma: no cover
