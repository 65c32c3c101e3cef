"""``structsearch evaluate``: train one structure on a task under a FLOP budget and score it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from structsearch.cli._common import print_json, seed_value, stdout_console
from structsearch.errors import TaskError

__all__ = ["parse_options", "register", "run"]

EXAMPLES = """examples:
  structsearch evaluate btt --task mlp-regression
  structsearch evaluate "(1/2|0|1/2|0|1/2|1/2|0)" --budget 1e11 --width 256 --json
  structsearch evaluate dense --task char-lm --steps 50
  structsearch evaluate btt --task structsearch.tasks.example_plugin:make_task --option dim=8
"""


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: value}, values read as JSON where they parse (3, 0.5, true).

    >>> parse_options(["teacher_width=128", "name=abc"])
    {'teacher_width': 128, 'name': 'abc'}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TaskError(f"--option: expected key=value, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def _width(text: str) -> int | str:
    if text in ("matched", "fixed"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, 'matched' or 'fixed', got {text!r}") from None


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``evaluate`` and ``scale`` share."""
    parser.add_argument(
        "--task",
        default="mlp-regression",
        help="mlp-regression (default), char-lm, mlp-regression-moe, char-lm-moe, or a plugin package.module:function",
    )
    parser.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="task option passed to the task factory (repeatable), e.g. teacher_width=128",
    )
    # default None, read as 0: evaluate can then tell a --seed given alongside --seeds
    parser.add_argument("--seed", type=seed_value, default=None, help="random seed in [0, 2^32) (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--lr", type=float, default=None, help="base learning rate (default: the task's tuned lr)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="train one structure on a task under a FLOP budget and score it",
        description="Train the task's model with the structure's layers for a budget of training FLOPs "
        "(6 x linear MACs per step + measured other FLOPs; see docs/evaluation.md) and report the "
        "validation score, loss curve, counts and whether it diverged.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "structure", metavar="THETA_OR_NAME", help="paper notation, JSON object, structure name or exported spec file"
    )
    add_task_arguments(parser)
    parser.add_argument("--budget", type=float, default=None, help="training FLOPs (default: the task's proxy budget)")
    parser.add_argument("--steps", type=int, default=None, help="train a fixed number of steps instead of a budget")
    parser.add_argument(
        "--width",
        type=_width,
        default=None,
        help="an integer, 'matched' (iso-FLOP with dense at the task's default width) or 'fixed' "
        "(the task's default width); default: the task's rule",
    )
    parser.add_argument(
        "--seeds",
        type=seed_value,
        nargs="+",
        default=None,
        metavar="SEED",
        help="train these seeds (instead of --seed), together in one vectorised run where the task batches "
        "seeds (char-lm trains them one by one); scores, mean and spread",
    )
    parser.add_argument("--eval-points", type=int, default=10, help="validation points on the curve (default 10)")
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="the proxy score: two runs (1/4 and 3/4 of the budget) and their power law's prediction at "
        "10x the budget (docs/evaluation.md 5)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from structsearch.evaluation import evaluate
    from structsearch.layers import load_spec

    if args.steps is not None and args.budget is not None:
        raise TaskError("--steps and --budget: give one (a fixed number of steps, or the FLOPs they may spend)")
    if args.seed is not None and args.seeds is not None:
        raise TaskError("--seed and --seeds: give one (a single seed, or the list to train)")
    args.seed = args.seed or 0
    args.structure = load_spec(args.structure)  # a name, a theta or an exported spec file (best.json)
    options = parse_options(args.option)
    if args.seeds is not None:
        return _run_seeds(args, options)
    if args.proxy:
        return _run_proxy(args, options)
    progress, bar = _progress(args.json)
    with bar:
        result = evaluate(
            args.structure,
            task=args.task,
            budget=args.budget,
            seed=args.seed,
            device=args.device,
            width=args.width,
            lr=args.lr,
            steps=args.steps,
            eval_points=args.eval_points,
            task_options=options,
            progress=progress,
            threads=args.threads,
        )
    if args.json:
        print_json(result.to_dict())
    else:
        _render(result)
    return 0 if result.status != "failed" else 1


def _run_proxy(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from structsearch.evaluation import proxy

    if args.steps is not None:
        raise TaskError("--proxy: spends a FLOP budget; use --budget, not --steps")
    r = proxy(
        args.structure,
        task=args.task,
        budget=args.budget,
        seed=args.seed,
        device=args.device,
        width=args.width,
        lr=args.lr,
        task_options=options,
        threads=args.threads,
    )
    if args.json:
        print_json(r.to_dict())
    else:
        from rich.table import Table

        table = Table(title=f"proxy score of {r.spec}" + (f"  [bold]{r.structure}[/]" if r.structure else ""))
        table.add_column("quantity")
        table.add_column("value")
        score = f"{r.score:.5g}" if r.score is not None else "-"
        table.add_row(f"predicted {r.metric} at {r.horizon_budget:.3g} FLOPs", f"{score}  ({r.status})")
        if r.reason:
            table.add_row("reason", r.reason)
        for run in r.runs:
            loss = f"{run.final_loss:.5g}" if run.final_loss is not None else run.status
            table.add_row(f"run at {run.budget:.3g} FLOPs", f"{loss} after {run.steps} steps, {run.wall_seconds:.1f} s")
        table.add_row("exponent b", f"{r.exponent:.4f}" if r.exponent is not None else "-")
        table.add_row("width / params / MACs", f"{r.width} / {r.params:,} / {r.macs:,}")
        table.add_row("achieved", f"{r.flops_per_second / 1e9:.3g} GFLOP/s (data {r.data_seconds:.1f} s apart)")
        stdout_console().print(table)
    return 0 if r.status != "failed" else 1


def _run_seeds(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from structsearch.evaluation import evaluate, proxy

    kwargs = {"task": args.task, "budget": args.budget, "device": args.device, "width": args.width, "lr": args.lr}
    kwargs.update(task_options=options, threads=args.threads, seeds=args.seeds)
    if args.proxy:
        if args.steps is not None:
            raise TaskError("--proxy: spends a FLOP budget; use --budget, not --steps")
        r = proxy(args.structure, **kwargs)
    else:
        r = evaluate(args.structure, steps=args.steps, eval_points=args.eval_points, **kwargs)
    if args.json:
        print_json(r.to_dict())
    else:
        from rich.table import Table

        how = "seeds in one vectorised run" if r.batched else "seeds trained one by one"
        table = Table(title=f"{r.spec}" + (f"  [bold]{r.structure}[/]" if r.structure else "") + f": {how}")
        for col in ("seed", "score", "status", "steps", "GFLOP/s"):
            table.add_column(col, justify="right")
        for run in r.runs:
            score = f"{run.score:.5g}" if run.score is not None else "-"
            table.add_row(str(run.seed), score, run.status, str(run.steps), f"{run.flops_per_second / 1e9:.2f}")
        mean = f"{r.mean_score:.5g}" if r.mean_score is not None else "-"
        spread = f" ± {r.std_score:.2g}" if r.std_score is not None else ""
        stdout_console().print(table)
        stdout_console().print(f"mean {r.metric} {mean}{spread}; {r.wall_seconds:.1f} s of training for all seeds")
    return 0 if r.status != "failed" else 1


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(quiet: bool) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import Progress

    if quiet or not Console(stderr=True).is_terminal:
        return None, _NoBar()

    bar = Progress(transient=True, console=Console(stderr=True))
    task_id = bar.add_task("training", total=None)

    def update(step: int, total: int) -> None:
        if step == 1 or step % 10 == 0 or step == total:
            bar.update(task_id, completed=step, total=total)

    return update, bar


def _render(r: Any) -> None:
    from rich.table import Table

    console = stdout_console()
    colour = {"ok": "green", "diverged": "red", "failed": "red"}[r.status]
    title = (
        f"{r.spec}"
        + (f"  [bold]{r.structure}[/]" if r.structure else "")
        + f"  on {r.task}, width {r.width} ({r.width_rule})"
    )
    table = Table(title=title, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", overflow="fold")
    final = f"{r.final_loss:.5g}" if r.final_loss is not None else "-"
    table.add_row(f"final validation {r.metric}", f"[{colour}]{final}[/]  ({r.status})")
    if r.reason:
        table.add_row("reason", r.reason)
    table.add_row("training FLOPs", f"{r.train_flops:.4g}  (budget {r.budget:.4g})")
    f = r.flops
    if f is not None:
        table.add_row(
            "FLOPs / step",
            f"{f.flops_per_step:.4g} = 6 x {f.linear_macs_per_step:,} linear MACs + {f.other_flops_per_step:.4g} other"
            f"  (FlopCounterMode: {f.measured_flops_per_step:.4g})",
        )
    if r.layer_paths:
        paths = ", ".join(f"{path} x{count}" for path, count in r.layer_paths.items())
        if "materialised" in r.layer_paths:
            paths += "  (materialised: one GEMM by the weight A.B, faster here; charged the structure's MACs)"
        table.add_row("structured layers ran", paths)
    table.add_row("steps", f"{r.steps} of {r.planned_steps}, batch {r.batch_size}")
    table.add_row("params", f"{r.params:,} ({r.structured_params:,} structured)")
    table.add_row("MACs / vector", f"{r.macs:,} ({r.structured_macs:,} structured)")
    table.add_row("lr (base)", f"{r.lr:g} at base width {r.base_width}")
    table.add_row("wall seconds", f"{r.wall_seconds:.2f} on {r.device} ({r.dtype})")
    table.add_row(
        "achieved",
        f"{r.flops_per_second / 1e9:.3g} GFLOP/s of model time; data {r.data_seconds:.2f} s, "
        f"evaluation {r.eval_seconds:.2f} s apart",
    )
    table.add_row("seed / versions", f"{r.seed} / " + ", ".join(f"{k} {v}" for k, v in r.versions.items()))
    console.print(table)
    curve = Table(title="validation curve", header_style="bold")
    for col in ("step", "train FLOPs", "wall s", f"val {r.metric}", "train loss"):
        curve.add_column(col, justify="right")
    for p in r.curve:
        curve.add_row(
            str(p.step),
            f"{p.train_flops:.3g}",
            f"{p.wall_seconds:.2f}",
            f"{p.val_loss:.5g}" if p.val_loss is not None else "-",
            f"{p.train_loss:.5g}" if p.train_loss is not None else "",
        )
    console.print(curve)
