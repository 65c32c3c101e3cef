"""Tasks: registry, plugin loading, the built-in tasks' data and metrics."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from structsearch.errors import TaskError
from structsearch.tasks import CharLM, MLPRegression, Task, check_task, get_task, task_names
from structsearch.tasks.char_lm import TRAIN_FRACTION, load_text, split_text

PLUGIN = "structsearch.tasks.example_plugin:make_task"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_builtins_are_registered():
    assert {"mlp-regression", "char-lm"} <= set(task_names())
    assert isinstance(get_task("mlp-regression"), MLPRegression)
    assert isinstance(get_task("char-lm", seq_len=16), CharLM)


def test_unknown_task_lists_valid_names():
    with pytest.raises(TaskError) as info:
        get_task("mlp-regresion")
    message = str(info.value)
    assert "'mlp-regresion'" in message
    assert "mlp-regression" in message and "char-lm" in message and "module:function" in message


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("no_such_module_xyz:make", "cannot import module"),
        ("structsearch.tasks.example_plugin:nope", "has no attribute"),
        ("structsearch.tasks.example_plugin:", "package.module:function"),
        ("structsearch.tasks.example_plugin:__doc__", "not callable"),
    ],
)
def test_bad_plugin_paths(path, needle):
    with pytest.raises(TaskError, match=needle):
        get_task(path)


def test_plugin_loads_via_module_function_with_options():
    task = get_task(PLUGIN, dim=8)
    assert task.name == "linear-map" and task.dim == 8
    with pytest.raises(TaskError, match="calling make_task"):
        get_task(PLUGIN, no_such_option=1)


def test_check_task_rejects_incomplete_objects():
    class Half:
        def build_model(self, linear, width):
            return None

    with pytest.raises(TaskError, match="missing train_batches, loss, validation_batches"):
        check_task(Half())

    class BadLr(Task):
        lr = -1.0

        def build_model(self, linear, width):
            return None

        train_batches = loss = validation_batches = build_model

    with pytest.raises(TaskError, match=r"task\.lr: expected a positive number"):
        check_task(BadLr())


def test_bad_task_options():
    with pytest.raises(TaskError, match="teacher_width"):
        get_task("mlp-regression", teacher_width=0)
    with pytest.raises(TaskError, match="bad options"):
        get_task("mlp-regression", no_such=1)


def test_mlp_regression_targets_are_normalised_and_fixed():
    task = MLPRegression(val_size=2048)
    (x, y), *_ = task.validation_batches("cpu")
    y_all = torch.cat([b[1] for b in task.validation_batches("cpu")])
    assert y_all.shape == (2048, task.output_dim)
    assert y_all.mean().abs() < 0.1 and abs(y_all.std().item() - 1) < 0.1
    # a fresh task object gives the same teacher and validation set
    (x2, y2), *_ = MLPRegression(val_size=2048).validation_batches("cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # training batches are fresh samples every step, reproducible from the generator
    a = task.train_batches(torch.Generator().manual_seed(0), "cpu")
    b = task.train_batches(torch.Generator().manual_seed(0), "cpu")
    first, second = next(a), next(a)
    assert not torch.equal(first[0], second[0])
    assert torch.equal(first[0], next(b)[0])


def test_mlp_student_shape():
    task = MLPRegression()
    made = []

    def linear(d_in, d_out, bias=True):
        made.append((d_in, d_out))
        return torch.nn.Linear(d_in, d_out, bias=bias)

    model = task.build_model(linear, 48)
    assert made == [(48, 48)] * (task.depth - 1)  # hidden layers structured, first/last dense
    assert model(torch.zeros(3, task.input_dim)).shape == (3, task.output_dim)


def test_char_lm_split_is_fixed():
    text = load_text()
    train, val = split_text()
    assert len(text) > 400_000
    assert len(train) == int(len(text) * TRAIN_FRACTION)
    assert train + val == text  # contiguous: train is a prefix, validation the tail
    # the same split every call, recorded by checksum in the task settings
    assert split_text() == (train, val)
    task = CharLM()
    assert task.describe()["corpus_sha256"] == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert len(task.vocab) == len(set(text))


def test_char_lm_validation_windows_come_from_the_tail():
    task = CharLM(seq_len=32, val_tokens=4096)
    batches = task.validation_batches("cpu")
    xs = torch.cat([x for x, _ in batches])
    assert xs.shape[1] == 32 and xs.numel() <= 4096
    _, val = split_text()
    decoded = "".join(task.vocab[i] for i in xs[0].tolist())
    assert val.startswith(decoded)
    assert len({x.shape for x, _ in batches}) == 1  # equal chunks: batch mean = token mean


def test_char_lm_bpc_is_nats_over_ln2():
    task = CharLM()
    assert task.score(math.log(2)) == pytest.approx(1.0)
    assert task.score(2.0) == pytest.approx(2.0 / math.log(2))
    # the zero-initialised head predicts uniformly: loss is ln V nats = log2 V bits
    model = task.build_model(lambda i, o, b=True: torch.nn.Linear(i, o, bias=b), 64)
    x, y = task.validation_batches("cpu")[0]
    with torch.no_grad():
        nats = float(task.loss(model, (x, y)))
    assert nats == pytest.approx(math.log(len(task.vocab)), rel=1e-5)
    assert task.score(nats) == pytest.approx(math.log2(len(task.vocab)), rel=1e-5)


def test_char_lm_width_must_fit_heads():
    with pytest.raises(TaskError, match="head_dim"):
        CharLM(head_dim=32).build_model(lambda i, o, b=True: torch.nn.Linear(i, o), 48)
