"""Criss-cross attention against its dense masked definition, in float64, on fresh random inputs."""

import pytest
import torch

from ccnet.attention import (
    RCCA,
    CrissCrossAttention,
    CrissCrossAttention3D,
    NonLocalBlock,
    RecurrentCrissCrossAttention,
    criss_cross_attention,
    criss_cross_attention_3d,
    criss_cross_attention_3d_reference,
    criss_cross_attention_bmm,
    criss_cross_attention_einsum,
    criss_cross_attention_reference,
    criss_cross_mask_3d,
    cross_to_dense,
    dense_to_cross,
)

SHAPES = [(1, 5, 5), (2, 4, 7), (2, 7, 3), (1, 1, 6), (2, 6, 1), (1, 1, 1)]  # (B, h, w)
FAST_PATHS = [criss_cross_attention, criss_cross_attention_einsum, criss_cross_attention_bmm]


def random_qkv(b, h, w, qk=3, c=4, requires_grad=False):
    def make(ch):
        return torch.randn(b, ch, h, w, dtype=torch.float64, requires_grad=requires_grad)

    return make(qk), make(qk), make(c)


@pytest.mark.parametrize("path", FAST_PATHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("b,h,w", SHAPES)
def test_fast_paths_equal_dense_masked_reference(path, b, h, w):
    q, k, v = random_qkv(b, h, w)
    out, attn = path(q, k, v)
    ref_out, ref_attn = criss_cross_attention_reference(q, k, v)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("b,h,w", [(2, 4, 5), (1, 3, 1), (1, 1, 4)])
def test_fast_path_gradients(b, h, w):
    q, k, v = random_qkv(b, h, w, qk=2, c=3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: criss_cross_attention(*t)[0], (q, k, v))
    assert torch.autograd.gradcheck(lambda *t: criss_cross_attention(*t)[1], (q, k, v))
    # and the same gradients as the reference for a random upstream gradient
    grad_out = torch.randn(b, 3, h, w, dtype=torch.float64)
    fast = torch.autograd.grad(criss_cross_attention(q, k, v)[0], (q, k, v), grad_out)
    ref = torch.autograd.grad(criss_cross_attention_reference(q, k, v)[0], (q, k, v), grad_out)
    for g_fast, g_ref in zip(fast, ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("b,h,w", SHAPES)
def test_attention_layout(b, h, w):
    q, k, v = random_qkv(b, h, w)
    _, attn = criss_cross_attention(q, k, v)
    assert attn.shape == (b, h, w, h + w)
    torch.testing.assert_close(attn.sum(-1), torch.ones(b, h, w, dtype=torch.float64))
    own_column_entry = attn[..., :h].diagonal(dim1=1, dim2=3)  # (B, w, h): attn[b, y, x, y]
    assert torch.all(own_column_entry == 0)
    own_row_entry = attn[..., h:].diagonal(dim1=2, dim2=3)  # attn[b, y, x, h + x]
    assert torch.all(own_row_entry > 0)


def test_dense_and_cross_layouts_round_trip():
    q, k, v = random_qkv(2, 4, 6)
    _, attn = criss_cross_attention(q, k, v)
    torch.testing.assert_close(dense_to_cross(cross_to_dense(attn), 4, 6), attn)


def make_module(cls, c=16, seed=None, **kwargs):
    module = cls(c, **kwargs).double()
    with torch.no_grad():
        module_gamma = module.cca.gamma if hasattr(module, "cca") else module.gamma
        module_gamma.fill_(torch.randn(()).item())  # gamma 0 would hide the attention path
    return module


def test_module_equals_reference_and_gradcheck():
    cca = make_module(CrissCrossAttention, c=8)
    x = torch.randn(2, 8, 5, 4, dtype=torch.float64, requires_grad=True)
    out, attn = cca(x, return_attention=True)
    ref_agg, ref_attn = criss_cross_attention_reference(*cca.project(x))
    torch.testing.assert_close(out, cca.gamma * ref_agg + x)
    torch.testing.assert_close(attn, ref_attn)
    assert torch.autograd.gradcheck(cca, (x,))


def test_module_names_match_official_code():
    names = set(CrissCrossAttention(64).state_dict())
    convs = ("query_conv", "key_conv", "value_conv")
    expected = {f"{conv}.{p}" for conv in convs for p in ("weight", "bias")}
    assert names == expected | {"gamma"}
    cca = CrissCrossAttention(64)
    assert cca.query_conv.out_channels == 8 and cca.value_conv.out_channels == 64
    assert cca.gamma.shape == (1,) and cca.gamma.item() == 0.0
    assert CrissCrossAttention(64, qk_channels=4).key_conv.out_channels == 4


def test_fresh_module_is_identity():
    x = torch.randn(1, 16, 6, 5)
    torch.testing.assert_close(CrissCrossAttention(16)(x), x)


@pytest.mark.parametrize("loops", [0, 1, 2, 3])
def test_rcca_equals_explicit_loops(loops):
    rcca = make_module(RecurrentCrissCrossAttention, c=8, recurrence=2)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    out, attentions = rcca(x, recurrence=loops, return_attention=True)
    expected, expected_attns = x, []
    for _ in range(loops):
        aggregated, attn = criss_cross_attention_reference(*rcca.cca.project(expected))
        expected = rcca.cca.gamma * aggregated + expected
        expected_attns.append(attn)
    torch.testing.assert_close(out, expected)
    assert len(attentions) == loops
    for got, want in zip(attentions, expected_attns, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(rcca(x, recurrence=loops), out)


def test_rcca_default_recurrence_and_alias():
    assert RCCA is RecurrentCrissCrossAttention
    rcca = make_module(RCCA, c=8, recurrence=3)
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    _, attentions = rcca(x, return_attention=True)
    assert len(attentions) == 3
    assert set(rcca.state_dict()) == {f"cca.{k}" for k in CrissCrossAttention(8).state_dict()}


@pytest.mark.parametrize("b,t,h,w", [(1, 3, 4, 5), (2, 2, 3, 3), (1, 1, 4, 2), (1, 4, 1, 1)])
def test_3d_equals_dense_masked_reference(b, t, h, w):
    q = torch.randn(b, 2, t, h, w, dtype=torch.float64)
    k = torch.randn(b, 2, t, h, w, dtype=torch.float64)
    v = torch.randn(b, 3, t, h, w, dtype=torch.float64)
    out, attn = criss_cross_attention_3d(q, k, v)
    ref_out, ref_dense = criss_cross_attention_3d_reference(q, k, v)
    torch.testing.assert_close(out, ref_out)
    assert attn.shape == (b, t, h, w, t + h + w)
    torch.testing.assert_close(attn.sum(-1), torch.ones(b, t, h, w, dtype=torch.float64))
    # Every position attends to exactly T + h + w - 2 others (itself once).
    assert torch.all(criss_cross_mask_3d(t, h, w).sum(-1) == t + h + w - 2)
    # Read the dense reference's weights back into the (time, column, row) layout.
    grid = ref_dense.view(b, t, h, w, t, h, w)
    ti, yi, xi = 1 % t, h - 1, w // 2
    expected_time = grid[:, ti, yi, xi, :, yi, xi].clone()
    expected_time[:, ti] = 0
    expected_col = grid[:, ti, yi, xi, ti, :, xi].clone()
    expected_col[:, yi] = 0
    expected_row = grid[:, ti, yi, xi, ti, yi, :]
    got = attn[:, ti, yi, xi]
    torch.testing.assert_close(got, torch.cat([expected_time, expected_col, expected_row], dim=-1))


def test_3d_module_gradcheck():
    module = CrissCrossAttention3D(4, qk_channels=2).double()
    with torch.no_grad():
        module.gamma.fill_(0.7)
    x = torch.randn(1, 4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


def test_non_local_equals_straightforward_reference():
    block = NonLocalBlock(8).double()
    with torch.no_grad():
        block.gamma.fill_(0.5)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    out, attn = block(x, return_attention=True)
    q, k, v = block.project(x)
    b, c, h, w = x.shape
    expected = torch.empty_like(x)
    for n in range(b):
        for y in range(h):
            for xx in range(w):
                scores = (q[n, :, y, xx, None, None] * k[n]).sum(0).flatten()  # (hw,)
                weights = torch.softmax(scores, 0)
                expected[n, :, y, xx] = (v[n].flatten(1) * weights).sum(1)
    torch.testing.assert_close(out, 0.5 * expected + x)
    assert attn.shape == (b, h * w, h * w)


@pytest.mark.parametrize(
    "module,bad,words",
    [
        (CrissCrossAttention(8), torch.randn(1, 4, 5, 5), "8 channels"),
        (CrissCrossAttention(8), torch.randn(8, 5, 5), "4-D"),
        (CrissCrossAttention(8), torch.randn(1, 8, 0, 5), "non-empty"),
        (CrissCrossAttention3D(8), torch.randn(1, 8, 5, 5), "5-D"),
        (NonLocalBlock(8), torch.randn(1, 3, 5, 5), "8 channels"),
    ],
)
def test_bad_input_raises_clear_value_error(module, bad, words):
    with pytest.raises(ValueError, match=words):
        module(bad)


@pytest.mark.parametrize("recurrence", [-1, 1.5, True])
def test_bad_recurrence_raises(recurrence):
    with pytest.raises(ValueError, match="recurrence"):
        RecurrentCrissCrossAttention(8, recurrence=recurrence)
    with pytest.raises(ValueError, match="recurrence"):
        RecurrentCrissCrossAttention(8)(torch.randn(1, 8, 3, 3), recurrence=recurrence)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    q, k, v = random_qkv(2, 9, 7, qk=4, c=8)
    cpu_out, cpu_attn = criss_cross_attention(q, k, v)
    gpu_out, gpu_attn = criss_cross_attention(q.cuda(), k.cuda(), v.cuda())
    torch.testing.assert_close(gpu_out.cpu(), cpu_out)
    torch.testing.assert_close(gpu_attn.cpu(), cpu_attn)


def test_fast_path_rejects_mismatched_projections_with_a_clear_error():
    q, k = torch.randn(1, 2, 4, 5), torch.randn(1, 2, 4, 5)
    with pytest.raises(ValueError, match="one batch size, map size"):
        criss_cross_attention(q, k, torch.randn(1, 3, 4, 6))  # v of another map size
    with pytest.raises(ValueError, match="q and k must have the same channels"):
        criss_cross_attention(q, torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5))
