"""The default storage, Optuna's journal file: opened for writing only once it is proven to be one.

A path given as storage may be anything a user typed. Before anything touches it, its first
bytes say what it is (:func:`identify`); only an empty file or one whose first line is an
Optuna journal record is treated as a journal. ``search`` then cuts a torn last line (a crash
mid-append) under the journal's lock; ``report`` and ``export`` read it through
:class:`ReadOnlyJournal`, which never creates, locks, truncates or appends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from structsearch.errors import StudyError

__all__ = ["ReadOnlyJournal", "identify", "open_journal"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SNIFF_BYTES = 65536
_BINARY = {b"\x89PNG": "a PNG image", b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip file", b"%PDF": "a PDF"}


def _is_record(line: bytes, complete: bool) -> bool:
    """An Optuna journal record: a JSON object with ``op_code`` and ``worker_id`` (or the torn start of one)."""
    if not complete:  # a crash during the very first append leaves a torn first line
        return line.startswith(b'{"op_code":')
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int) and "worker_id" in record


def identify(path: str | Path) -> str | None:
    """``None`` when ``path`` is missing, empty or an Optuna journal; otherwise what it looks like.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("keep\\nlost")
    >>> identify(f.name)
    'a text file'
    >>> os.remove(f.name)
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "a directory"
    except OSError as err:
        raise StudyError(f"storage {path}: cannot read ({err.strerror or err})") from None
    if not head:
        return None
    if head.startswith(_SQLITE_MAGIC):
        return f"an SQLite database: use sqlite:///{path}"
    first, newline, _ = head.partition(b"\n")
    if _is_record(first, complete=bool(newline)):
        return None
    for magic, kind in _BINARY.items():
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file"
    if "\x00" in text:
        return "a binary file"
    if text.lstrip()[:1] in ("{", "["):
        return "a JSON file"
    return "a text file"


def _refuse_foreign(path: Path) -> None:
    kind = identify(path)
    if kind is None:
        return
    if kind.startswith("an SQLite database"):
        raise StudyError(f"storage {path}: this is {kind}")
    if kind == "a directory":  # where the journal file should be (runs/<study>/journal.log, or a path ending in it)
        raise StudyError(f"storage {path}: a directory stands where the journal file should be; it was left untouched")
    raise StudyError(
        f"storage {path}: this is {kind}, not an Optuna journal; it was left untouched "
        "(give a new file, an existing journal or a directory)"
    )


def _checked(record: Any, number: int, path: Path) -> dict[str, Any]:
    """``record`` (log ``number``, from 0) if it has a journal record's shape, else a one-line StudyError."""
    if isinstance(record, dict) and isinstance(record.get("op_code"), int) and "worker_id" in record:
        return record
    raise StudyError(f"{path}: the journal is damaged (line {number + 1} is not an Optuna journal record)")


class _CheckedFileBackend(JournalFileBackend):
    """Optuna's file backend with each record's shape checked as it is read (a damaged line: one line, no traceback)."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        for number, record in enumerate(super().read_logs(log_number_from), start=log_number_from):
            yield _checked(record, number, Path(self._file_path))


class ReadOnlyJournal(BaseJournalBackend):
    """A journal file read without a lock, a repair or a write (``report`` and ``export``).

    A torn last line (a worker killed mid-append) is simply not read.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        number = 0
        try:
            with open(self._path, "rb") as f:
                for number, line in enumerate(f):
                    if not line.endswith(b"\n"):
                        return
                    if number >= log_number_from:
                        yield _checked(json.loads(line), number, self._path)
        except ValueError as err:  # each line is one JSON document: name the line, not the column in it
            raise StudyError(f"{self._path}: cannot read the journal (line {number + 1}: {err})") from None
        except OSError as err:
            raise StudyError(f"{self._path}: cannot read the journal ({err})") from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StudyError(f"{self._path}: opened read-only; report and export never write to a study")


def _repair(path: Path, lock: Any) -> None:
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
        block, pos, cut = 65536, size, 0
        while pos > 0:  # find the last newline and truncate after it
            start = max(0, pos - block)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        f.truncate(cut)


def open_journal(path: Path, writable: bool) -> Any:
    """A :class:`optuna.storages.JournalStorage` on ``path``: repaired and locked for ``search``
    (``writable``), read-only for ``report`` and ``export``. A file that is not a journal is refused."""
    from optuna.storages.journal import JournalFileSymlinkLock

    _refuse_foreign(path)
    if not writable:
        if not path.is_file():
            raise StudyError(f"storage {path}: no such journal file")
        return _replayed(path, lambda: ReadOnlyJournal(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileSymlinkLock(str(path))
        _repair(path, lock)
        return _replayed(path, lambda: _CheckedFileBackend(str(path), lock_obj=lock))
    except OSError as err:
        raise StudyError(f"{path}: cannot open the journal for writing ({err.strerror or err})") from None
    except json.JSONDecodeError as err:  # optuna parses line by line: its "line 1" is not the file's
        raise StudyError(f"{path}: cannot read the journal (a line is not JSON: {err.msg})") from None
    except ValueError as err:
        raise StudyError(f"{path}: cannot read the journal ({err})") from None


def _replayed(path: Path, backend: Any) -> Any:
    """A JournalStorage on ``backend()``, whose records Optuna replays now: one it cannot apply is a StudyError."""
    from optuna.storages import JournalStorage

    try:
        return JournalStorage(backend())
    except json.JSONDecodeError:  # a line that is not JSON at all: the caller names it
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, AssertionError) as err:
        # well-formed records that contradict each other (a trial that was never created, say)
        import optuna

        why = f"Optuna {optuna.__version__} cannot replay it: {type(err).__name__} {err}"
        raise StudyError(f"{path}: the journal is damaged or from another Optuna ({why})") from None
