"""The exception root of structsearch and its few subclasses.

Every message says what was expected, what was received and where (a field path).
The CLI turns any ``StructSearchError`` into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "SizeError",
    "SpaceError",
    "SpecError",
    "StructSearchError",
    "StudyError",
    "SurgeryError",
    "TaskError",
]


class StructSearchError(Exception):
    """Root of every error structsearch raises on purpose."""


class SpecError(StructSearchError, ValueError):
    """A structure spec (theta, name or JSON) is malformed or out of range."""


class SizeError(StructSearchError, ValueError):
    """Layer sizes are invalid, or the rounded class sizes need too much padding."""


class TaskError(StructSearchError, ValueError):
    """A task name, plugin path or task object does not satisfy the task protocol."""


class SpaceError(StructSearchError, ValueError):
    """A search-space file is malformed."""


class SurgeryError(StructSearchError, ValueError):
    """``structurize`` was asked for layers the model does not have (nothing to replace)."""


class StudyError(StructSearchError):
    """A study cannot be found, opened or read."""


class BudgetError(TaskError):
    """A FLOP budget buys not even one training step of the model."""
