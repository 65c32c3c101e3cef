"""What the commands share: argument types and how a result is emitted."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

__all__ = ["emit", "flops", "positive_int", "print_json", "seed_value", "stdout_console"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def seed_value(text: str) -> int:
    """argparse type: a seed in [0, 2^32), what numpy and torch both accept."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^32), got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^32), got {text}")
    return value


def flops(text: str) -> float:
    """argparse type: a positive, finite number of FLOPs such as 1e9."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of FLOPs like 1e9, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of FLOPs, got {text!r}")
    return value


def stdout_console() -> Any:
    """stdout console; wide when not a terminal so that tables stay readable in pipes and logs."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def emit(result: Any, as_json: bool) -> None:
    """One JSON object (``result.to_dict()``) for machines, else the result's rich rendering."""
    if as_json:
        print_json(result.to_dict())
    else:
        stdout_console().print(result)


def print_json(payload: Any) -> None:
    """``payload`` as one line of strict JSON: a NaN or infinite number (a plug-in's score, say) becomes null."""
    print(json.dumps(_finite(payload), default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
