"""Replayed training streams are bit-identical to fresh ones, stay under their memory cap, and change no result."""

from __future__ import annotations

import itertools

import pytest
import torch

from structsearch import _stream_cache
from structsearch.evaluation import evaluate
from structsearch.tasks import CharLM, MLPRegression

MLP = {"teacher_width": 32, "teacher_depth": 2, "batch_size": 32, "val_size": 256}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch):
    monkeypatch.delenv("STRUCTSEARCH_STREAM_CACHE_MB", raising=False)
    _stream_cache.clear()
    yield
    _stream_cache.clear()


def _fresh(task, seed: int, count: int) -> list:
    return list(itertools.islice(task.train_batches(torch.Generator().manual_seed(seed), CPU), count))


def _same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for (x, y), (x0, y0) in zip(got, want, strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0)


def _take(task, seed: int, count: int) -> list:
    return list(itertools.islice(_stream_cache.training_stream(task, seed, CPU), count))


def test_replay_is_bit_identical_to_a_fresh_stream():
    task = MLPRegression(**MLP)
    want = _fresh(MLPRegression(**MLP), 5, 100)
    _same(_take(task, 5, 40), want[:40])  # records the 40 batches drawn
    assert _stream_cache.cache_bytes() == 40 * 32 * (32 + 8) * 4
    _same(_take(MLPRegression(**MLP), 5, 100), want)  # replays 64, then extends the recording
    assert _stream_cache.cache_bytes() == 100 * 32 * (32 + 8) * 4


def test_seeds_and_settings_get_their_own_recordings():
    task = MLPRegression(**MLP)
    _same(_take(task, 1, 3), _fresh(task, 1, 3))
    _same(_take(task, 2, 3), _fresh(task, 2, 3))
    other = MLPRegression(**{**MLP, "teacher_seed": 9})
    _same(_take(other, 1, 3), _fresh(other, 1, 3))
    assert not torch.equal(_take(task, 1, 1)[0][1], _take(other, 1, 1)[0][1])  # same inputs, other teacher


def test_past_the_cap_streams_continue_unrecorded(monkeypatch):
    batch_bytes = 32 * (32 + 8) * 4
    monkeypatch.setenv("STRUCTSEARCH_STREAM_CACHE_MB", str(10.5 * batch_bytes / 2**20))  # room for 10 batches
    task = MLPRegression(**MLP)
    want = _fresh(task, 0, 50)
    first = _stream_cache.training_stream(task, 0, CPU)
    second = _stream_cache.training_stream(task, 0, CPU)
    _same(list(itertools.islice(first, 40)), want[:40])  # the first takes over the live stream at the cap
    assert _stream_cache.cache_bytes() == 10 * batch_bytes
    _same(list(itertools.islice(second, 50)), want)  # the second makes its own from batch 10
    _same(_take(task, 0, 50), want)
    assert _stream_cache.cache_bytes() == 10 * batch_bytes


def test_a_new_stream_evicts_the_least_recently_opened_recording(monkeypatch):
    batch_bytes = 32 * (32 + 8) * 4
    monkeypatch.setenv("STRUCTSEARCH_STREAM_CACHE_MB", str(10.5 * batch_bytes / 2**20))  # room for 10 batches
    task = MLPRegression(**MLP)
    _same(_take(task, 0, 10), _fresh(task, 0, 10))  # seed 0 fills the cap
    _same(_take(task, 1, 6), _fresh(task, 1, 6))  # seed 1 evicts it to record its own batches
    assert _stream_cache.cache_bytes() == 6 * batch_bytes
    _same(_take(task, 2, 4), _fresh(task, 2, 4))  # seed 2 fits beside seed 1
    assert _stream_cache.cache_bytes() == 10 * batch_bytes
    _same(_take(task, 1, 8), _fresh(task, 1, 8))  # seed 1 grows by evicting seed 2, opened before it
    assert _stream_cache.cache_bytes() == 8 * batch_bytes


def test_off_or_not_declared_means_nothing_is_recorded(monkeypatch):
    monkeypatch.setenv("STRUCTSEARCH_STREAM_CACHE_MB", "0")
    _same(_take(MLPRegression(**MLP), 0, 5), _fresh(MLPRegression(**MLP), 0, 5))
    assert _stream_cache.cache_bytes() == 0
    monkeypatch.delenv("STRUCTSEARCH_STREAM_CACHE_MB")
    task = CharLM(n_layer=1, seq_len=16, batch_size=4, val_tokens=256)
    assert not task.replayable_stream
    _take(task, 0, 5)
    assert _stream_cache.cache_bytes() == 0


def test_evaluate_with_a_replayed_stream_equals_a_fresh_one(monkeypatch):
    kwargs = {"width": 32, "steps": 40, "device": "cpu", "eval_points": 4}
    monkeypatch.setenv("STRUCTSEARCH_STREAM_CACHE_MB", "0")
    fresh = evaluate("btt", MLPRegression(**MLP), seed=3, **kwargs)
    monkeypatch.delenv("STRUCTSEARCH_STREAM_CACHE_MB")
    recorded = evaluate("btt", MLPRegression(**MLP), seed=3, **kwargs)
    assert _stream_cache.cache_bytes() > 0
    replayed = evaluate("btt", MLPRegression(**MLP), seed=3, **kwargs)
    batched = evaluate("btt", MLPRegression(**MLP), seeds=[3, 4], **kwargs)
    for run in (recorded, replayed):
        assert [p.val_loss for p in run.curve] == [p.val_loss for p in fresh.curve]
        assert [p.train_loss for p in run.curve] == [p.train_loss for p in fresh.curve]
    assert batched.runs[0].final_loss == pytest.approx(fresh.final_loss, rel=1e-3)
