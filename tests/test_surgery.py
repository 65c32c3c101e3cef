"""Model surgery (structurize) and projection from dense weights (project_dense)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from rich.console import Console
from torch import nn

from structsearch.errors import SizeError, SpecError, SurgeryError
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
    with pytest.raises(SurgeryError, match=r"root module, a Linear, is never replaced"):
        structurize(nn.Linear(16, 16), "btt")


def test_structurize_says_when_patterns_leave_nothing_to_replace() -> None:
    model = Model()
    with pytest.raises(SurgeryError) as info:
        structurize(model, "btt", include="blocks.*.mlp.*", exclude="blocks.*")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert "include=['blocks.*.mlp.*'] exclude=['blocks.*']" in message
    assert "match none of the model's 7 replaceable layers ('blocks.0.attn', 'blocks.0.mlp.0'" in message
    assert "Linear x7" in message and "GELU x2" in message
    assert all(type(m) is not EinsumLinear for m in model.modules())  # nothing was touched
    convs = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.raises(
        SurgeryError, match=r"include=\['\*'\] exclude=\[\] find no layer to replace; .*Conv2d x2, ReLU x1"
    ):
        structurize(convs, "btt")


class Conv1D(nn.Module):
    """The layout of transformers.pytorch_utils.Conv1D (GPT-2): y = x @ weight + bias, weight (d_in, d_out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], self.nf)


def _conv1d_classes() -> list:
    classes = [Conv1D]
    try:
        from transformers.pytorch_utils import Conv1D as HFConv1D
    except ImportError:
        return classes
    return [*classes, HFConv1D]


@pytest.mark.parametrize("conv_class", _conv1d_classes(), ids=lambda c: c.__module__.split(".")[0])
@pytest.mark.parametrize(("spec", "d_in", "d_out"), [("btt", 64, 256), ("low-rank:0.5", 48, 144), ("btt", 36, 36)])
def test_structurize_conv1d_projects_its_transposed_weight(conv_class: type, spec: str, d_in: int, d_out: int) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(conv_class(d_in, d_in), nn.GELU(), conv_class(d_out, d_in))
    exact = EinsumLinear(spec, d_in, d_out)
    assert exact.padding == 0
    with torch.no_grad():
        for core in exact.cores:
            core.param.normal_()
        model[2].weight.copy_(exact.to_dense().T)  # stored (d_in, d_out)
    x = torch.randn(3, 5, d_in)
    before = model(x).detach()
    bias = model[2].bias.detach().clone()
    summary = structurize(model, spec, include="2", init="project")
    layer = model[2]
    assert isinstance(layer, EinsumLinear) and (layer.d_in, layer.d_out) == (d_in, d_out)
    change = summary.layers[0]
    assert (change.kind, change.d_in, change.d_out, change.params_before) == ("Conv1D", d_in, d_out, d_in * d_out)
    assert change.projection_error < 1e-5
    torch.testing.assert_close(layer.to_dense(), exact.to_dense(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.bias.detach(), bias)
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    assert "2 (Conv1D): " in str(summary)


def test_conv1d_detection_and_param_groups() -> None:
    from structsearch.layers import param_groups

    model = nn.Sequential(Conv1D(32, 16), nn.Linear(32, 8), nn.LayerNorm(8))
    groups = {tuple(g["names"]): g["lr"] for g in param_groups(model, lr=1e-2, base_fan_in=8)}
    assert groups == {
        ("0.weight",): 1e-2 * 8 / 16,
        ("1.weight",): 1e-2 * 8 / 32,
        ("0.bias", "1.bias", "2.weight", "2.bias"): 1e-2,
    }

    class NotConv(nn.Module):  # the name alone is not enough: the layout must match
        def __init__(self) -> None:
            super().__init__()
            self.nf, self.weight = 3, nn.Parameter(torch.zeros(4, 5))

    NotConv.__name__ = "Conv1D"
    with pytest.raises(SurgeryError, match="find no layer to replace"):
        structurize(nn.Sequential(NotConv()), "btt")


def test_structurize_that_raises_leaves_the_model_untouched() -> None:
    """A layer refused late (here the last) must not leave the earlier ones already swapped."""
    model = nn.Sequential(nn.Linear(300, 512), nn.GELU(), nn.Linear(512, 77), nn.GELU(), nn.Linear(77, 10))
    x = torch.randn(3, 300)
    before = model(x)
    with pytest.raises(SizeError, match=r"layer '4': .*d_out=10"):
        structurize(model, "(1/2|0|1/2|1/4|1/3|5/12|1/4)", init="project")
    assert [type(m) for m in model] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    torch.testing.assert_close(model(x), before)


def test_structurize_leaves_tied_weights_dense() -> None:
    embed = nn.Embedding(64, 16)
    head = nn.Linear(16, 64, bias=False)
    head.weight = embed.weight  # tied, as GPT-2's lm_head and token embedding
    model = nn.ModuleDict({"embed": embed, "body": nn.Linear(16, 16), "head": head})
    summary = structurize(model, "btt")
    assert [c.name for c in summary.replaced] == ["body"]
    assert summary.layers[1].name == "head" and "tied to 'embed.weight'" in summary.layers[1].skipped
    assert model["head"].weight is model["embed"].weight


def test_structurize_leaves_multihead_attention_out_proj_dense() -> None:
    """nn.MultiheadAttention reads out_proj.weight itself: a structured out_proj would break its forward."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=96, nhead=4, dim_feedforward=300, batch_first=True, dropout=0.0)
    summary = structurize(layer, "btt", init="project")
    assert [c.name for c in summary.replaced] == ["linear1", "linear2"]
    skipped = next(c for c in summary.layers if c.name == "self_attn.out_proj")
    assert "out_proj.weight" in skipped.skipped and type(layer.self_attn.out_proj) is not EinsumLinear
    assert layer(torch.randn(2, 7, 96)).shape == (2, 7, 96)


def _exactly_btt_feedforward(block: nn.TransformerEncoderLayer) -> None:
    """linear1/linear2 weights with BTT's exact structure, so an exact projection changes nothing."""
    for name in ("linear1", "linear2"):
        dense = getattr(block, name)
        with torch.no_grad():
            dense.weight.copy_(EinsumLinear("btt", dense.in_features, dense.out_features).to_dense())


def test_structurized_torch_encoder_runs_in_eval_mode_and_computes_the_same() -> None:
    """Eval mode's fused kernels read linear1/linear2.weight; structurize sends encoders down their unfused path."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=256, batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True).eval()
    layer.eval()
    for block in (layer, *encoder.layers):
        _exactly_btt_feedforward(block)
    x = torch.randn(3, 10, 64)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[1, 6:] = True  # with a padding mask the encoder takes its nested-tensor path
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The PyTorch API of nested tensors", UserWarning)  # dense's fused path
        before = (layer(x), encoder(x), encoder(x, src_key_padding_mask=pad))
    with torch.no_grad():
        assert len(structurize(layer, "btt", init="project").replaced) == 2
        assert len(structurize(encoder, "btt", init="project").replaced) == 4
        assert isinstance(layer.linear1, EinsumLinear) and isinstance(encoder.layers[1].linear2, EinsumLinear)
        torch.testing.assert_close(layer(x), before[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(encoder(x), before[1], rtol=1e-4, atol=1e-4)
        padded = encoder(x, src_key_padding_mask=pad)
        torch.testing.assert_close(padded[~pad], before[2][~pad], rtol=1e-4, atol=1e-4)


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
