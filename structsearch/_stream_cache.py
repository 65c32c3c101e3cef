"""Replayed training streams: each (task, seed) stream is made once per process, not once per training.

A search trains many candidates on one task with the same seeds, and every one of them draws
the same batches: ``train_batches`` depends only on the task's settings and the generator's
seed. For mlp-regression, making a batch (the teacher's forward pass) costs more than a BTT
student's step, so a task that declares ``replayable_stream = True`` has its stream recorded the
first time it is drawn and replayed to every later training in the process. The replay is
bit-identical to a fresh stream (tests/test_stream_cache.py).

Memory is capped (``STRUCTSEARCH_STREAM_CACHE_MB``, default 256; 0 turns the cache off). A
training that runs past a recording's end extends it while the cap allows; past the cap, the
first such training takes over the recording's live stream and later ones make their own. A
stream that needs room first evicts the least recently opened recordings, so a search that moves
on to new seeds (or a new task) records them instead of replaying a stale one forever.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["cache_bytes", "clear", "training_stream"]

DEFAULT_MB = 256


@dataclass
class _Recording:
    """The batches of one stream drawn so far, and the live stream that draws the next ones."""

    live: Iterator[Any] | None
    batches: list[Any] = field(default_factory=list)
    nbytes: int = 0


_RECORDINGS: OrderedDict[tuple[Any, ...], _Recording] = OrderedDict()


def _cap_bytes() -> int:
    text = os.environ.get("STRUCTSEARCH_STREAM_CACHE_MB", str(DEFAULT_MB))
    try:
        return max(0, int(float(text) * 2**20))
    except ValueError:
        return DEFAULT_MB * 2**20  # a malformed setting must not stop a training


def cache_bytes() -> int:
    """Bytes held by every recording in this process."""
    return sum(rec.nbytes for rec in _RECORDINGS.values())


def clear() -> None:
    """Drop every recording (frees their memory)."""
    _RECORDINGS.clear()


def _room_for(size: int, cap: int, keep: tuple[Any, ...]) -> bool:
    """Whether ``size`` more bytes fit under the cap, after evicting recordings opened before ``keep``."""
    while cache_bytes() + size > cap:
        oldest = next(iter(_RECORDINGS))
        if oldest == keep:
            return False  # only the current recording (and later-opened ones) are left
        del _RECORDINGS[oldest]
    return True


def _fresh(task: Any, seed: int, device: Any) -> Iterator[Any]:
    import torch

    return iter(task.train_batches(torch.Generator().manual_seed(seed), device))


def _key(task: Any, seed: int, device: Any) -> tuple[Any, ...] | None:
    from structsearch.tasks._protocol import settings_key

    settings = settings_key(task)
    if settings is None:
        return None  # settings that do not serialise cannot tell two tasks apart
    return *settings, getattr(task, "data_block", None), int(seed), str(device)


def _nbytes(batch: Any) -> int:
    from torch.utils._pytree import tree_leaves

    return sum(leaf.numel() * leaf.element_size() for leaf in tree_leaves(batch) if hasattr(leaf, "element_size"))


def training_stream(task: Any, seed: int, device: Any) -> Iterator[Any]:
    """The training batches of ``task`` for ``seed``: replayed if recorded, else made (and recorded)."""
    cap = _cap_bytes()
    key = _key(task, seed, device) if getattr(task, "replayable_stream", False) and cap else None
    if key is None:
        return _fresh(task, seed, device)
    rec = _RECORDINGS.get(key)
    if rec is None:
        rec = _RECORDINGS[key] = _Recording(live=_fresh(task, seed, device))
    _RECORDINGS.move_to_end(key)
    return _replay(key, rec, cap, task, seed, device)


def _replay(key: tuple[Any, ...], rec: _Recording, cap: int, task: Any, seed: int, device: Any) -> Iterator[Any]:
    for i in itertools.count():
        if i < len(rec.batches):
            yield rec.batches[i]
            continue
        if rec.live is None:  # the recording is full and its live stream taken: make our own from here
            yield from itertools.islice(_fresh(task, seed, device), i, None)
            return
        batch = next(rec.live)
        size = _nbytes(batch)
        if key not in _RECORDINGS or not _room_for(size, cap, keep=key):
            # full (or this recording was evicted by a newer one): this training keeps the live stream
            live, rec.live = rec.live, None
            yield batch
            yield from live
            return
        rec.batches.append(batch)
        rec.nbytes += size
        yield batch
