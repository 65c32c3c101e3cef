"""The ``structsearch`` command line: thin commands that parse, call the library, render.

Each command lives in its own module exposing ``register(subparsers)``, which adds a
subparser and sets ``func`` to a callable taking the parsed args and returning an exit
code. Modules are imported lazily by name so that ``structsearch taxonomy`` never pays
for torch or optuna. Any ``StructSearchError`` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from structsearch.errors import StructSearchError

__all__ = ["build_parser", "main"]

# command name -> module defining register(); each imports heavy libraries inside run only.
COMMANDS: dict[str, str] = {
    "taxonomy": "structsearch.cli.taxonomy_cmd",
    "evaluate": "structsearch.cli.evaluate_cmd",
    "scale": "structsearch.cli.scale_cmd",
    "search": "structsearch.cli.search_cmd",
    "report": "structsearch.cli.report_cmd",
    "export": "structsearch.cli.export_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="structsearch",
        description="Search, measure and export einsum-structured linear layers.",
    )
    from structsearch import __version__

    parser.add_argument("--version", action="version", version=f"structsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in commands or COMMANDS:
        try:
            module = importlib.import_module(COMMANDS[name])
        except ModuleNotFoundError as err:
            if err.name != COMMANDS[name]:
                raise
            continue  # a command whose module is not there yet is simply not offered
        module.register(sub)
    return parser


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the command asked for: keeps `taxonomy` torch-free and fast.
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([first] if first in COMMANDS else None)
    args = parser.parse_args(argv)
    args.argv = argv  # what `search --workers N` starts its other workers with
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `structsearch ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except StructSearchError as err:
        message = " ".join(str(err).splitlines())  # one line, whatever the input held
        print(f"structsearch {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"structsearch {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the machine, not the input (exit 1): a full disk or a read-only one mid-run
        if err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({err.filename})" if err.filename else ""
        message = f"{err.strerror}{where}; what was recorded is kept: rerun the same command once fixed"
        print(f"structsearch {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
