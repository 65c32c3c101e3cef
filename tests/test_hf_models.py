"""structurize on real model families: a tiny GPT-2 (Conv1D projections) and a tiny Llama (nn.Linear).

Built from configs with no weights downloaded. Needs the optional ``transformers`` (``pip install
structsearch[hf]``; the ``dev`` extra includes it); skipped with the reason otherwise.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structsearch.errors import SurgeryError
from structsearch.layers import EinsumLinear, structurize
from structsearch.layers._dense import dense_layer

transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install structsearch[hf])")


def tiny_gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=48, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama() -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@torch.no_grad()
def make_weights_exact(model: nn.Module, spec: str) -> None:
    """Give every dense (Linear/Conv1D) weight the exact structure of ``spec``, in its own storage layout."""
    for module in model.modules():
        dense = dense_layer(module)
        if dense is None:
            continue
        exact = EinsumLinear(spec, dense.d_in, dense.d_out).to(dense.matrix.dtype)
        assert exact.padding == 0
        for core in exact.cores:
            core.param.normal_(0.0, core.init_std * 2)
        dense.matrix.copy_(exact.to_dense())  # a view: Conv1D's is the transpose of its (d_in, d_out) storage


def test_gpt2_conv1d_projections_are_structurized_exactly() -> None:
    model = tiny_gpt2()
    make_weights_exact(model, "low-rank:0.5")
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    before = model(tokens).logits
    summary = structurize(model, "low-rank:0.5", init="project")
    # c_attn, attn.c_proj, c_fc, mlp.c_proj per block; the tied lm_head stays dense
    assert [c.name for c in summary.replaced] == [
        f"transformer.h.{i}.{name}"
        for i in range(2)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert {c.kind for c in summary.replaced} == {"Conv1D"}
    assert [(c.d_in, c.d_out) for c in summary.replaced[:4]] == [(48, 144), (48, 48), (48, 192), (192, 48)]
    assert max(c.projection_error for c in summary.replaced) < 1e-5
    head = summary.layers[-1]
    assert head.name == "lm_head" and "tied to 'transformer.wte.weight'" in head.skipped
    assert isinstance(model.transformer.h[1].mlp.c_proj, EinsumLinear)
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(model(tokens).logits, before, rtol=1e-4, atol=1e-4)
    loss = model(tokens, labels=tokens).loss  # trains: gradients reach the structured cores
    loss.backward()
    assert all(core.param.grad is not None for core in model.transformer.h[0].attn.c_attn.cores)


def test_gpt2_patterns_that_match_nothing_name_the_layer_types() -> None:
    model = tiny_gpt2()
    with pytest.raises(SurgeryError) as info:
        structurize(model, "btt", include="*.q_proj")  # a Llama name on GPT-2
    message = str(info.value)
    assert "include=['*.q_proj']" in message
    assert "match none of the model's 9 replaceable layers ('transformer.h.0.attn.c_attn'" in message
    assert "Conv1D x8" in message and "Linear x1" in message


def test_llama_linears_are_structurized_exactly() -> None:
    # float64: in float32, 14 re-associated layers put the odd logit 1e-4 off (rounding, not structure)
    model = tiny_llama().double()
    make_weights_exact(model, "btt")
    tokens = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    before = model(tokens).logits
    summary = structurize(model, "btt", include="model.layers.*", init="project")
    projections = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
    assert [c.name for c in summary.layers] == [
        f"model.layers.{i}.{name}"
        for i in range(2)
        for name in (*projections, "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    ]
    assert {c.kind for c in summary.replaced} == {"Linear"} and len(summary.replaced) == 14
    assert max(c.projection_error for c in summary.replaced) < 1e-5
    assert summary.params_after < summary.params_before / 4
    torch.testing.assert_close(model(tokens).logits, before, rtol=1e-9, atol=1e-9)
    with pytest.raises(
        SurgeryError, match=r"exclude=\['\*'\] match none of the model's 1 replaceable layers \('lm_head'\)"
    ):
        structurize(model, "btt", exclude="*")  # only lm_head is still dense
