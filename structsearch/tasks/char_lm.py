"""``char-lm``: a small GPT-style character language model on text that ships with CPython.

Data: the documentation topics in ``pydoc_data.topics`` (about 465 KB of English, part of
every CPython install), concatenated in sorted key order. The vocabulary is the sorted set
of its characters. The split is fixed: the first 90% of characters train, the last 10%
validate (a contiguous tail, so no validation text is seen in training). Validation is the
mean cross entropy over the first ``val_tokens`` targets of the validation split in
non-overlapping windows, reported in bits per character (nats / ln 2).

Model: token + learned position embeddings (dense), ``n_layer`` pre-norm blocks of causal
self-attention (written out so FlopCounterMode counts
its matmuls) and a 4x MLP, final LayerNorm and a dense head. The attention projections
q, k, v, o (width -> width) and the MLP's fc (width -> 4 width) and proj (4 width -> width)
are the structured layers.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator
from typing import Any

from structsearch.errors import TaskError
from structsearch.tasks._protocol import LinearFactory, Task, register_task

__all__ = ["TRAIN_FRACTION", "CharLM", "char_lm", "load_text", "split_text"]

TRAIN_FRACTION = 0.9


@functools.cache
def load_text() -> str:
    """The corpus: ``pydoc_data.topics`` values joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def split_text(text: str | None = None) -> tuple[str, str]:
    """The fixed (train, validation) split: first 90% / last 10% of the characters.

    >>> train, val = split_text("abcdefghij" * 10)
    >>> len(train), len(val), val[:3]
    (90, 10, 'abc')
    """
    text = load_text() if text is None else text
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]


class CharLM(Task):
    """Character-level GPT on ``pydoc_data.topics`` (see module docstring)."""

    name = "char-lm"
    metric = "bpc"
    # lr: tuned by benchmarks/tune_lr.py (dense, base_width, default budget).
    lr = 1.6e-2
    base_width = 64
    default_width = 64
    budget = 2e11
    weight_decay = 0.0
    warmup_fraction = 0.05
    grad_clip = 1.0
    data_block = 32  # training batches drawn per call of the generator
    # Under vmap its layer norms, GELUs and bias adds run on batch-strided layouts and its GEMMs
    # as bmm: 4 seeds batched cost 4.1-4.8x one seed at widths 32-128 (BTT at 32: 3.5x;
    # throughput.md), so seeds=[...] trains them one by one.
    batch_seeds = False

    def __init__(
        self,
        n_layer: int = 2,
        head_dim: int = 32,
        seq_len: int = 64,
        batch_size: int = 16,
        val_tokens: int = 16384,
    ) -> None:
        for key, value in (
            ("n_layer", n_layer),
            ("head_dim", head_dim),
            ("seq_len", seq_len),
            ("batch_size", batch_size),
            ("val_tokens", val_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TaskError(f"char-lm.{key}: expected a positive integer, got {value!r}")
        self.n_layer, self.head_dim, self.seq_len = n_layer, head_dim, seq_len
        self.batch_size, self.val_tokens = batch_size, val_tokens
        text = load_text()
        self.vocab = sorted(set(text))
        self.options = {
            "n_layer": n_layer,
            "head_dim": head_dim,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "val_tokens": val_tokens,
            "corpus_chars": len(text),
            "corpus_sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
        }
        self._ids: tuple[Any, Any] | None = None
        self._val: dict[str, list[Any]] = {}

    @property
    def width_multiple(self) -> int:
        """Widths must split into whole heads."""
        return self.head_dim

    def encode(self, text: str) -> Any:
        import torch

        index = {ch: i for i, ch in enumerate(self.vocab)}
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def _split_ids(self) -> tuple[Any, Any]:
        if self._ids is None:
            train, val = split_text()
            self._ids = (self.encode(train), self.encode(val))
        return self._ids

    # -- the protocol -----------------------------------------------------------------
    def build_model(self, linear: LinearFactory, width: int) -> Any:
        if width % self.head_dim:
            raise TaskError(f"char-lm width: must be a multiple of head_dim={self.head_dim}, got {width}")
        return _gpt_class()(len(self.vocab), width, self.n_layer, width // self.head_dim, self.seq_len, linear)

    def train_batches(self, generator: Any, device: Any) -> Iterator[Any]:
        import torch

        train, _ = self._split_ids()
        span = self.seq_len + 1
        offsets = torch.arange(span)
        block = max(1, int(self.data_block))  # batches drawn at once; the same stream as one by one
        while True:
            starts = torch.randint(0, len(train) - span, (block * self.batch_size,), generator=generator)
            windows = train[starts[:, None] + offsets].to(device)  # (block * batch, seq_len + 1)
            for w in windows.split(self.batch_size):  # (batch, seq_len + 1)
                yield w[:, :-1], w[:, 1:]

    def loss(self, model: Any, batch: Any) -> Any:
        import torch.nn.functional as F

        x, y = batch
        logits = model(x)  # (batch, seq_len, vocab)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def validation_batches(self, device: Any) -> list[Any]:
        key = str(device)
        if key not in self._val:
            _, val = self._split_ids()
            span = self.seq_len + 1
            n_windows = min(self.val_tokens // self.seq_len, (len(val) - 1) // span)
            windows = val[: n_windows * span].reshape(n_windows, span).to(device)  # (n, seq_len + 1)
            per = max(1, 2048 // self.seq_len)
            # equal-sized chunks so the mean over batches is the mean over tokens
            n_full = (n_windows // per) * per or n_windows
            self._val[key] = [(w[:, :-1], w[:, 1:]) for w in windows[:n_full].split(per)]
        return self._val[key]

    def score(self, mean_validation_loss: float) -> float:
        """Bits per character: mean cross entropy in nats divided by ln 2."""
        return mean_validation_loss / math.log(2)


@functools.cache
def _gpt_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, width: int, n_head: int, linear: LinearFactory) -> None:
            super().__init__()
            self.n_head = n_head
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.q, self.k, self.v, self.o = (linear(width, width, False) for _ in range(4))
            self.fc, self.proj = linear(width, 4 * width, True), linear(4 * width, width, True)

        def attention(self, h: torch.Tensor) -> torch.Tensor:
            b, t, w = h.shape
            # (b, t, w) -> (b, n_head, t, head_dim) for q, k and v
            heads = (b, t, self.n_head, w // self.n_head)
            q, k, v = (p(h).reshape(heads).transpose(1, 2) for p in (self.q, self.k, self.v))
            # explicit causal attention (FlopCounterMode counts its two matmuls on every backend)
            scores = (q @ k.transpose(-2, -1)) * (w // self.n_head) ** -0.5  # (b, n_head, t, t)
            mask = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
            a = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v  # (b, n_head, t, head_dim)
            return self.o(a.transpose(1, 2).reshape(b, t, w))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h = h + self.attention(self.ln1(h))
            return h + self.proj(F.gelu(self.fc(self.ln2(h))))

    class GPT(nn.Module):
        def __init__(self, vocab: int, width: int, n_layer: int, n_head: int, seq_len: int, linear: LinearFactory):
            super().__init__()
            self.tok = nn.Embedding(vocab, width)
            self.pos = nn.Embedding(seq_len, width)
            self.blocks = nn.ModuleList(Block(width, n_head, linear) for _ in range(n_layer))
            self.ln = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)
            nn.init.normal_(self.tok.weight, std=1.0)
            nn.init.normal_(self.pos.weight, std=1.0)
            nn.init.zeros_(self.head.weight)  # muP-style zero readout: initial loss is ln(vocab)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            t = idx.shape[1]
            h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))  # (b, t, width)
            for block in self.blocks:
                h = block(h)
            return self.head(self.ln(h))  # (b, t, vocab)

    return GPT


def char_lm(**options: Any) -> CharLM:
    """Factory registered as ``char-lm``; ``options`` go to :class:`CharLM`."""
    return CharLM(**options)


register_task("char-lm", char_lm)
