"""Output paths, checked before any work: a folder that exists and can be written, a file that is not a folder.

Commands that train for minutes and then write a file (``scale --plot``, ``export -o``) call
:func:`check_output` first, so a typo in a path is a one-line error at once, not after the work.
"""

from __future__ import annotations

import os
from pathlib import Path

from structsearch.errors import StructSearchError

__all__ = ["check_output"]


def check_output(
    path: str | os.PathLike[str],
    what: str,
    error: type[StructSearchError] = StructSearchError,
    suffixes: tuple[str, ...] | None = None,
    create_parent: bool = False,
) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a file can be written there, else ``error`` (one line).

    >>> check_output("/no/such/folder/x.png", "plot")
    Traceback (most recent call last):
    ...
    structsearch.errors.StructSearchError: plot /no/such/folder/x.png: the folder /no/such/folder does not exist
    """
    target = Path(path)
    if target.is_dir():
        raise error(f"{what} {target}: is a folder; give a file name")
    if suffixes is not None and target.suffix and target.suffix.lower().lstrip(".") not in suffixes:
        raise error(f"{what} {target}: unknown file type {target.suffix!r}; expected one of {', '.join(suffixes)}")
    if target.exists() and not target.is_file():  # a pipe or a device such as /dev/stdout: written in place
        if not os.access(target, os.W_OK):
            raise error(f"{what} {target}: not writable (permission denied)")
        return target
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.exists() and create_parent:
        existing = next((p for p in folder.parents if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise error(f"{what} {target}: cannot create the folder {folder} (no write permission in {existing})")
        return target
    if not folder.is_dir():
        raise error(f"{what} {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise error(f"{what} {target}: not writable (permission denied)")
    return target
