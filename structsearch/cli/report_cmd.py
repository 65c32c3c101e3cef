"""``structsearch report``: the best trials of a study, Spearman correlations, plots."""

from __future__ import annotations

import argparse
import textwrap

from structsearch.cli._common import emit, positive_int

__all__ = ["register", "run"]

EXAMPLES = """examples:
  structsearch report demo
  structsearch report shared --storage postgresql://user@host/db --top 20 --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="best trials, Spearman correlations of omega/psi/nu with loss, plots",
        description=textwrap.fill(
            "Report on a stored study: a table of the best trials by their score (headed by what the "
            "score is, e.g. the predicted loss at the target compute), dense and BTT as reference rows, the "
            "confirmation stage's means, 95% intervals and paired tests, failed or diverged trials with their "
            "reasons, the Spearman correlation of omega, psi and nu with the score, and PNG plots written to "
            "runs/<study>/ (score vs training FLOPs with the Pareto front; the omega-psi plane coloured by score; "
            "each trained candidate's frontier points and fitted line). Reads what the study stored; "
            "recomputes nothing.",
            width=90,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", metavar="STUDY", help="study name")
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL or journal file")
    parser.add_argument("--top", type=positive_int, default=10, metavar="K", help="best trials to list (default 10)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--runs-dir", default=None, metavar="DIR", help="where runs/<study>/ lives (default runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from structsearch.reporting import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = report(args.study, args.storage, top=args.top, plots=not args.no_plots, runs_dir=args.runs_dir)
    emit(result, args.json)
    return 0
