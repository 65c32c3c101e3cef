"""Model surgery (structurize) and projection from dense weights (project_dense)."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from torch import nn

from structsearch.errors import SizeError, SpecError
from structsearch.layers import EinsumLinear, StructurizeSummary, project_dense, structurize

PROJECTABLE = ["dense", "low-rank:0.5", "kronecker", "sum-kronecker:0.25", "btt", "btt:0.25", "tt:0.25", "tt:0"]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(64, 64)
        self.mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64, bias=False))


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block.attn(x)
            x = x + block.mlp(x)
        return self.head(x)


def test_structurize_replaces_matching_linears_and_summarises() -> None:
    model = Model()
    summary = structurize(model, "btt", include="blocks.*", exclude="*.attn")
    assert isinstance(summary, StructurizeSummary)
    assert [c.name for c in summary.layers] == ["blocks.0.mlp.0", "blocks.0.mlp.2", "blocks.1.mlp.0", "blocks.1.mlp.2"]
    assert isinstance(model.blocks[0].mlp[0], EinsumLinear) and isinstance(model.blocks[1].mlp[2], EinsumLinear)
    assert type(model.blocks[0].attn) is nn.Linear and type(model.head) is nn.Linear
    assert model.blocks[0].mlp[2].bias is None
    first = summary.layers[0]
    assert (first.d_in, first.d_out, first.params_before, first.macs_before) == (64, 256, 64 * 256, 64 * 256)
    assert (first.params_after, first.macs_after) == (model.blocks[0].mlp[0].params, model.blocks[0].mlp[0].macs)
    assert summary.params_after < summary.params_before
    assert model(torch.randn(2, 5, 64)).shape == (2, 5, 10)
    console = Console(file=io.StringIO(), width=160)
    console.print(summary)
    text = console.file.getvalue()
    assert "blocks.0.mlp.0" in text and "total" in text
    assert summary.to_dict()["params_after"] == summary.params_after
    assert "4 of 4 layers" in str(summary)


def test_structurize_patterns_and_errors() -> None:
    model = Model()
    with pytest.raises(SizeError, match=r"layer 'head': .*d_out=10"):
        structurize(model, "(1/3|1/3|1/3|1/3|1/3|1/3|0)", include="head")
    summary = structurize(model, "(1/3|1/3|1/3|1/3|1/3|1/3|0)", include=["head"], skip_invalid=True)
    assert summary.layers[0].skipped and not summary.replaced and type(model.head) is nn.Linear
    with pytest.raises(SpecError, match="init: expected one of random, project"):
        structurize(model, "btt", init="svd")
    assert structurize(nn.Linear(16, 16), "btt").layers == []  # the root module is never replaced


@pytest.mark.parametrize("spec", PROJECTABLE)
@pytest.mark.parametrize(("d_in", "d_out"), [(16, 16), (36, 25)])
def test_projecting_a_structured_matrix_recovers_it(spec: str, d_in: int, d_out: int) -> None:
    torch.manual_seed(0)
    source = EinsumLinear(spec, d_in, d_out)
    if source.padding > 0:
        pytest.skip("padded: no closed form")
    with torch.no_grad():
        for core in source.cores:
            core.param.normal_()
    weight = source.to_dense().detach()
    target = EinsumLinear(spec, d_in, d_out)
    error = project_dense(target, weight, source.bias)
    assert error < 1e-5
    torch.testing.assert_close(target.to_dense(), weight, rtol=1e-4, atol=1e-4)


def test_projection_is_the_truncated_svd_for_low_rank() -> None:
    torch.manual_seed(1)
    weight = torch.randn(32, 48, dtype=torch.float64)
    layer = EinsumLinear("low-rank:0.5", 48, 32, dtype=torch.float64)  # rank round(32^0.5) = 6
    error = project_dense(layer, weight)
    s = torch.linalg.svdvals(weight)
    rank = layer.dims["rho"]
    assert error == pytest.approx(float(s[rank:].norm() / s.norm()), rel=1e-9)


@pytest.mark.parametrize(
    ("spec", "d_in", "d_out", "improves"),
    [
        ("kronecker", 20, 22, True),  # padded outputs (e=4, d>=2) cut across the rearranged blocks
        ("tt:0.25", 30, 45, True),
        ("btt:0.25", 30, 45, False),  # padded outputs are whole rows of each block: the SVD is optimal
    ],
)
def test_projection_with_padding_refines_the_svd_start(spec: str, d_in: int, d_out: int, improves: bool) -> None:
    torch.manual_seed(2)
    weight = torch.randn(d_out, d_in)
    layer = EinsumLinear(spec, d_in, d_out)
    assert layer.padding > 0
    start = project_dense(EinsumLinear(spec, d_in, d_out), weight, fit_steps=0)
    fitted = project_dense(layer, weight, fit_steps=50)
    assert fitted < 1 and start < 1
    assert (fitted < start - 1e-4) if improves else fitted == pytest.approx(start, rel=1e-6)


def test_structurize_project_reports_errors_and_keeps_function() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    # make the first weight exactly BTT so its projection is exact
    exact = EinsumLinear("btt", 16, 16)
    with torch.no_grad():
        exact.B.normal_()
        model[0].weight.copy_(exact.to_dense())
    bias = model[0].bias.detach().clone()
    summary = structurize(model, "btt", init="project")
    errors = [c.projection_error for c in summary.layers]
    assert errors[0] < 1e-5 and 0 < errors[1] < 1
    torch.testing.assert_close(model[0].bias.detach(), bias)
    with pytest.raises(SizeError, match=r"weight: expected shape \(16, 16\)"):
        project_dense(model[0], torch.randn(16, 8))


def test_docs_layers_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The python blocks of docs/layers.md run in order, in one namespace, and assert what they claim."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "layers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/layers.md", "exec"), namespace)
    shown = re.search(r"print\(layer\)\n((?:# .*\n)+)", blocks[0])  # the repr on the page, wrapped as comments
    assert shown is not None
    printed = capsys.readouterr().out.splitlines()[0]
    assert printed == " ".join(line.removeprefix("# ").strip() for line in shown.group(1).splitlines())
    assert namespace["summary"].params_after < namespace["summary"].params_before
