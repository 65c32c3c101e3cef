"""``structsearch search``: search a space of structures with Optuna, steered by the taxonomy."""

from __future__ import annotations

import argparse
import sys

from structsearch.cli._common import emit, flops, positive_int, seed_value
from structsearch.cli._workers import gather, stop_if_a_worker_failed, with_workers
from structsearch.engine._pruning import DEFAULT_PRUNER, PRUNERS
from structsearch.errors import StructSearchError
from structsearch.frontier import DEFAULT_SLOPE_RULE, SLOPE_RULES, TARGET_MULTIPLE, lookahead_note

__all__ = ["register", "run"]

EXAMPLES = """examples:
  structsearch search --space btt --task mlp-regression --budget 1e9 --trials 12 --width 64
  structsearch search --budget 3e9 --target-flops 3e10 --trials 24 --study mine   (frontier scoring)
  structsearch search --space full --sampler nsga2 --objective pareto --trials 40 --study pareto-full
  structsearch search --space search_spaces/kronecker.yaml --no-steer --sampler random --trials 20
  structsearch search --space full --storage postgresql://user@host/db --study shared   (one per worker)
  structsearch search --space btt --trials 40 --workers 4                                (4 local workers)

Running the same command again resumes the study (runs/<study>/journal.log by default).
Spaces: full, full-continuous, btt, kronecker, low-rank, steered-default, or a YAML file.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search a space of structures (Optuna, taxonomy-steered), resumable",
        description="Propose structures from a search space with Optuna, canonicalise every proposal, settle "
        "invalid, redundant, duplicate and out-of-constraint ones analytically (no training), train the rest "
        "on the task at the FLOP budget, and record everything in a resumable study.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--space",
        default="steered-default",
        metavar="NAME_OR_FILE",
        help="a shipped space name or a YAML file (default steered-default)",
    )
    parser.add_argument(
        "--task",
        default="mlp-regression",
        help="mlp-regression (default), char-lm, mlp-regression-moe, char-lm-moe or package.module:function",
    )
    parser.add_argument(
        "--budget",
        type=flops,
        default=None,
        metavar="FLOPS",
        help="training FLOPs per trial (default: the task's proxy budget)",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=12,
        metavar="N",
        help="finished trials the study should hold, settled ones included (default 12)",
    )
    parser.add_argument(
        "--max-trainings",
        type=positive_int,
        default=None,
        metavar="N",
        help="also stop once the study holds N trained trials",
    )
    parser.add_argument("--study", default=None, metavar="NAME", help="study name (default <space>-<task>-<objective>)")
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage URL or journal file (default runs/<study>/journal.log)",
    )
    parser.add_argument(
        "--sampler",
        choices=("tpe", "nsga2", "random", "grid"),
        default=None,
        help="default tpe for --objective loss, nsga2 for pareto",
    )
    parser.add_argument(
        "--objective",
        choices=("loss", "pareto"),
        default="loss",
        help="loss, or pareto: minimise loss and MACs together",
    )
    parser.add_argument(
        "--steer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="taxonomy steering (default on; --no-steer: plain Optuna over raw theta)",
    )
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the sampler and of training (default 0)")
    parser.add_argument("--width", type=positive_int, default=None, help="model width (default: the task's)")
    parser.add_argument(
        "--evaluator",
        default=None,
        metavar="frontier|proxy|final|toy|MODULE:FUNC",
        help="how a candidate is scored: 'frontier' (default: a ladder of widths and budgets, the "
        "compute-efficient frontier's fitted loss at --target-flops), 'proxy' (two runs at --width, loss "
        "extrapolated to 10x the budget), 'final' (one run's final loss at --width), 'toy' (analytic, no "
        "training) or a function like structsearch.evaluate",
    )
    parser.add_argument(
        "--target-flops",
        type=flops,
        default=None,
        metavar="FLOPS",
        help=f"the compute the frontier score predicts the loss at (default {TARGET_MULTIPLE:g}x --budget)",
    )
    parser.add_argument(
        "--slope-rule",
        choices=SLOPE_RULES,
        default=None,
        help="how the frontier fit's exponent is carried past the ladder: 'parameter-growth' (default for a "
        "new study: scaled by (1+nu-omega)/(1+nu), so parameter sharing gains less from scale) or 'fitted' "
        "(as fitted); a resumed study keeps its own",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=None,
        help=f"Optuna pruner over the frontier ladder's rungs (default {DEFAULT_PRUNER})",
    )
    parser.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score dense and BTT the same way, once per study, as reference rows (default on)",
    )
    parser.add_argument(
        "--confirm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="when the study is done, re-train the top candidates, dense and BTT with several seeds "
        "and test the best against the references (default on)",
    )
    parser.add_argument(
        "--confirm-top", type=positive_int, default=3, metavar="K", help="candidates to confirm (default 3)"
    )
    parser.add_argument(
        "--confirm-seeds", type=positive_int, default=3, metavar="S", help="seeds per structure (default 3, at least 2)"
    )
    parser.add_argument(
        "--confirm-flops",
        type=flops,
        default=None,
        metavar="FLOPS",
        help="training FLOPs of each confirmation run (default: --budget; up to --target-flops if affordable)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads per training (default: torch's); on a 2-core machine run two workers with "
        "--threads 1 on the same study (docs/evaluation.md 7)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N local worker processes on the study, stopped together on Ctrl-C (default 1)",
    )
    parser.add_argument("--runs-dir", default=None, metavar="DIR", help="where runs/<study>/ lives (default runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=with_workers(run))


def _caution_far_target(args: argparse.Namespace) -> None:
    """One line on stderr when --target-flops lies beyond what the frontier score was measured to see."""
    if args.evaluator not in (None, "frontier") or args.target_flops is None:
        return
    try:
        from structsearch.tasks import get_task

        budget = float(args.budget) if args.budget is not None else float(get_task(args.task).budget)
        rule = getattr(args, "slope_rule", None) or DEFAULT_SLOPE_RULE  # a resumed study's own rule is not known here
        note = lookahead_note(budget, float(args.target_flops), rule)
    except (StructSearchError, ValueError, TypeError, ZeroDivisionError):  # search() reports bad input properly
        return
    if note:
        print(f"note: {note}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import optuna

    from structsearch.engine import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _caution_far_target(args)
    result = search(
        args.space,
        task=args.task,
        budget=args.budget,
        trials=args.trials,
        study=args.study,
        storage=args.storage,
        sampler=args.sampler,
        objective=args.objective,
        steer=args.steer,
        seed=args.seed,
        width=args.width,
        evaluate_fn=args.evaluator,
        target_flops=args.target_flops,
        slope_rule=args.slope_rule,
        pruner=args.pruner,
        references=args.references,
        confirm=args.confirm,
        confirm_top=args.confirm_top,
        confirm_seeds=tuple(range(args.confirm_seeds)),
        confirm_flops=args.confirm_flops,
        threads=args.threads,
        max_trainings=args.max_trainings,
        progress=not args.no_progress,
        runs_dir=args.runs_dir,
        callbacks=stop_if_a_worker_failed(args),
    )
    emit(gather(args, result), args.json)  # with --workers N: all workers' sessions
    return 0
