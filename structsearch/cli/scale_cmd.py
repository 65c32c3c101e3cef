"""``structsearch scale``: a ladder of widths and budgets, frontiers, power-law fits, multipliers."""

from __future__ import annotations

import argparse
from typing import Any

from structsearch.cli._common import print_json, stdout_console
from structsearch.cli.evaluate_cmd import add_task_arguments, parse_options

__all__ = ["register", "run"]

EXAMPLES = """examples:
  structsearch scale btt --widths 64 128 256 --budgets 1e10 3e10 1e11 --plot frontier.png
  structsearch scale btt kronecker low-rank:0.5 --json
  structsearch scale btt --task char-lm --widths 64 128 --budgets 1e11 3e11 --no-baseline
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scale",
        help="train a ladder of widths, fit loss = a C^-b, compare compute with dense",
        description="Train every (structure, width, budget) of the ladder, keep the compute-efficient "
        "frontier of validation loss versus training FLOPs, fit loss = a * C^(-b) (+ c with --offset) "
        "with standard errors, and report the compute multiplier against dense at dense's best loss.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "structures", nargs="+", metavar="THETA_OR_NAME", help="one or more structures (or exported spec files)"
    )
    add_task_arguments(parser)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256], help="widths (default 64 128 256)")
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=None, help="training FLOP budgets (default: task budget x 1 3 10)"
    )
    parser.add_argument("--baseline", default="dense", help="the structure to compare with (default dense)")
    parser.add_argument("--no-baseline", action="store_true", help="do not train a baseline")
    parser.add_argument("--offset", action="store_true", help="fit loss = a C^-b + c (needs 4 frontier points)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write a plot of the frontiers")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from structsearch.layers import load_spec
    from structsearch.scaling import scale

    structures = [load_spec(s) for s in args.structures]  # names, theta or exported spec files

    kwargs: dict[str, Any] = {
        "task": args.task,
        "widths": args.widths,
        "budgets": args.budgets,
        "seed": args.seed or 0,
        "device": args.device,
        "baseline": None if args.no_baseline else args.baseline,
        "offset": args.offset,
        "lr": args.lr,
        "plot": args.plot,
        "task_options": parse_options(args.option),
        "threads": args.threads,
    }
    if args.json:
        result = scale(structures, **kwargs)
        print_json(result.to_dict())
        return _plot_written(result)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task_id = bar.add_task("trainings", total=None)

    def progress(done: int, total: int, label: str) -> None:
        bar.start()  # at the first call, once scale() has checked its arguments: a refusal stays one line
        bar.update(task_id, completed=done, total=total, description=label)

    try:
        result = scale(structures, progress=progress, **kwargs)
    finally:
        if bar.live.is_started:  # stopping a display that never started still prints a line
            bar.stop()
    _render(result)
    return _plot_written(result)


def _plot_written(result: Any) -> int:
    """The results are out; a plot that could not be written is still an error (one line, exit 2)."""
    if result.plot_error:
        import sys

        print(f"structsearch scale: error: {result.plot_error}; the results above are complete", file=sys.stderr)
        return 2
    return 0


def _measured(row: Any) -> str:
    if not row.multiplier_measured:
        return "(does not reach L*)"
    return (">= " if row.measured_is_lower_bound else "") + f"{row.multiplier_measured:.3g}"


def _render(result: Any) -> None:
    from rich.table import Table

    console = stdout_console()
    target = f"{result.target_loss:.4g}" if result.target_loss is not None else "-"
    table = Table(
        title=f"{result.task}: widths {result.widths}, budgets {[f'{b:.2g}' for b in result.budgets]}, "
        f"L* = {target} ({result.metric})",
        header_style="bold",
    )
    for col in ("structure", "frontier pts", "best loss", "a", "b ± err", "multiplier (fit)", "multiplier (measured)"):
        table.add_column(col, justify="right")
    for row in result.structures:
        fit = row.fit
        best = min((v for _, v in row.frontier), default=None)
        b = "-"
        if fit is not None:
            b = f"{fit.b:.4f}" + (f" ± {fit.b_err:.4f}" if fit.b_err is not None else "")
        table.add_row(
            row.label,
            str(len(row.frontier)),
            f"{best:.4g}" if best is not None else "-",
            f"{fit.a:.3g}" if fit else "-",
            b,
            f"{row.multiplier:.3g}" if row.multiplier else "-",
            _measured(row),
        )
    console.print(table)
    skipped = [(row.label, p) for row in result.structures for p in row.points if p.status != "ok"]
    for label, p in skipped:
        console.print(f"[yellow]{label} width {p.width} budget {p.budget:.2g}: {p.status}[/] {p.reason or ''}")
    if result.plot:
        console.print(f"plot: {result.plot}")
