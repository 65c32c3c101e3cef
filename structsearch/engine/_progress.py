"""What a search shows on stderr while it runs: the trials bar, then one bar per later stage.

A search spends much of its time outside its trials: scoring the references before them and
re-training the top candidates with seeds after them. Each stage gets its own bar (work done,
the item at hand, elapsed time), so the trials bar reaching its end is not taken for the end.
Without a terminal (a log file) each bar's final state is one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["stage_bar", "trials_bar"]


def _best_line(best: dict[str, Any] | None) -> str:
    if not best:
        return "best: -"
    name = f" [{best['name']}]" if best.get("name") else ""
    return (
        f"best #{best['number']} {best['paper']}{name} loss {best['loss']:.4g} "
        f"ω {best['omega']:.3g} ψ {best['psi']:.3g}"
    )


@contextmanager
def trials_bar(enabled: bool, total: int, done: int, best: dict[str, Any] | None) -> Iterator[Any]:
    """Trials done/total, elapsed and remaining time, and the best so far; yields ``update(done, best)``."""
    if not enabled:
        yield lambda done, best: None
        return
    from rich.console import Group
    from rich.live import Live
    from rich.progress import TextColumn, TimeRemainingColumn
    from rich.text import Text

    bar, console = _bar("trials", TextColumn("remaining"), TimeRemainingColumn())
    task_id = bar.add_task("search", total=total, completed=done)
    line = Text(_best_line(best))

    def update(done: int, best: dict[str, Any] | None) -> None:
        bar.update(task_id, completed=min(done, total))
        line.plain = _best_line(best)

    with Live(Group(bar, line), console=console, refresh_per_second=4):
        yield update
    if not console.is_terminal:  # a log file gets the final state without a line break
        console.line()


@contextmanager
def stage_bar(enabled: bool, stage: str, total: int) -> Iterator[Callable[..., None]]:
    """One stage before or after the trials (``stage``: what it does).

    Yields ``update(done, what, total=None)``: items done, a few words on the current one, and
    the total where the stage learns it as it goes.
    """
    if not enabled or total <= 0:
        yield lambda done, what, total=None: None
        return
    from rich.progress import TextColumn

    bar, console = _bar(stage, TextColumn("{task.description}"))
    task_id = bar.add_task("", total=total)

    def update(done: int, what: str, total: int | None = None) -> None:
        bar.update(task_id, completed=done, description=what, **({"total": total} if total else {}))

    with bar:
        yield update
    if not console.is_terminal:
        console.line()


def _bar(title: str, *tail: Any) -> tuple[Any, Any]:
    """A rich Progress on stderr: title, bar, done/total, elapsed time, then ``tail``'s columns."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn(title), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(), *tail)
    return Progress(*columns, console=console), console
