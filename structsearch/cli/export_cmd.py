"""``structsearch export``: the best structures of a study as a spec file with provenance."""

from __future__ import annotations

import argparse

from structsearch.cli._common import positive_int, print_json, stdout_console

__all__ = ["register", "run"]

EXAMPLES = """examples:
  structsearch export demo --top 3 -o best.json
  python -c "from structsearch.layers import EinsumLinear; print(EinsumLinear.from_spec('best.json', 256, 256))"
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the best structures of a study as a spec file (loadable by EinsumLinear.from_spec)",
        description="Write the top-K trained structures of a study, best first, with provenance (study, trial, "
        "task, budget, seed, score, versions) to a JSON file that EinsumLinear.from_spec and structurize load.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", metavar="STUDY", help="study name")
    parser.add_argument("--top", type=positive_int, default=1, metavar="K", help="structures to export (default 1)")
    parser.add_argument(
        "-o", "--output", default=None, metavar="PATH", help="output file (default runs/<study>/best.json)"
    )
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL or journal file")
    parser.add_argument("--runs-dir", default=None, metavar="DIR", help="where runs/<study>/ lives (default runs)")
    parser.add_argument("--json", action="store_true", help="print the exported document as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from structsearch.exporting import export

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    doc = export(args.study, args.top, args.output, storage=args.storage, runs_dir=args.runs_dir)
    if args.json:
        print_json(doc)
        return 0
    from rich.table import Table

    shown = len(doc["specs"])
    title = f"exported {shown} spec(s) from {args.study} to {doc['path']}"
    if shown < args.top:
        title += f" (asked for {args.top}: the study has {shown} trained)"
    table = Table(title=title)
    for col in ("rank", "theta", "name", "score", "trial"):
        table.add_column(col)
    for s in doc["specs"]:
        table.add_row(
            str(s["rank"]),
            str(s["paper"]),
            s.get("name") or "",
            f"{s['score']['loss']:.5g}",
            str(s["provenance"]["trial"]),
        )
    stdout_console().print(table)
    return 0
