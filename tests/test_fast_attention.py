"""The fast path (ccnet.fast_attention) against the dense masked reference: values, gradients, layouts.

Every comparison is in float64 on fresh random inputs, against explicit loops of
``criss_cross_attention_reference`` on the module's own 1x1 convolutions (the definition).
"""

from collections import OrderedDict

import pytest
import torch

from ccnet import fast_attention
from ccnet.attention import (
    CrissCrossAttention,
    RecurrentCrissCrossAttention,
    criss_cross_attention,
    criss_cross_attention_reference,
)
from ccnet.fast_attention import (
    CrissCrossFunction,
    CrissCrossStepFunction,
    copy_between_layouts,
    criss_cross_step,
    fused_projection_weights,
    joint_softmax_attention,
    product_into,
    transpose_to_channels_first,
)

# (B, h, w): square, wide, tall, a single row or column, and more pixels than one copy block (256)
SHAPES = [(2, 5, 4), (1, 3, 7), (2, 6, 1), (1, 1, 5), (1, 1, 1), (2, 17, 19)]


def make_rcca(c=6, qk=2, recurrence=2, seed=0):
    torch.manual_seed(seed)
    rcca = RecurrentCrissCrossAttention(c, recurrence, qk_channels=qk).double()
    with torch.no_grad():
        rcca.cca.gamma.fill_(0.8)  # gamma 0 would hide the attention path
    return rcca


def reference_rcca(rcca, x, loops):
    """The definition: R explicit loops of dense masked attention on the module's convolutions."""
    attentions = []
    for _ in range(loops):
        aggregated, attn = criss_cross_attention_reference(*rcca.cca.project(x))
        x = rcca.cca.gamma * aggregated + x
        attentions.append(attn)
    return x, attentions


def loss_of(out, attentions, weights):
    """A random linear functional of the output and of every attention map, so all paths get gradient."""
    total = (out * weights[0]).sum()
    for attn, weight in zip(attentions, weights[1:], strict=True):
        total = total + (attn * weight).sum()
    return total


@pytest.mark.parametrize("b,h,w", SHAPES)
@pytest.mark.parametrize("loops", [1, 3])
@pytest.mark.parametrize("scratch_bytes", [None, 1])  # 1: every strided product one matrix at a time
def test_rcca_values_and_gradients_equal_reference(monkeypatch, b, h, w, loops, scratch_bytes):
    if scratch_bytes is not None:
        monkeypatch.setattr(fast_attention, "SCRATCH_BYTES", scratch_bytes)
    rcca = make_rcca(recurrence=loops)
    x = torch.randn(b, 6, h, w, dtype=torch.float64, requires_grad=True)
    out, attentions = rcca(x, return_attention=True)
    ref_out, ref_attentions = reference_rcca(rcca, x, loops)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    for got, want in zip(attentions, ref_attentions, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

    weights = [torch.randn_like(out)] + [torch.randn_like(a) for a in attentions]
    inputs = [x, *rcca.parameters()]
    fast = torch.autograd.grad(loss_of(out, attentions, weights), inputs)
    ref = torch.autograd.grad(loss_of(ref_out, ref_attentions, weights), inputs)
    for name, g_fast, g_ref in zip(["x", *dict(rcca.named_parameters())], fast, ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


def test_recomputed_attention_gives_the_same_gradients(monkeypatch):
    rcca = make_rcca(recurrence=2)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    stored = torch.autograd.grad(rcca(x).square().sum(), [x, *rcca.parameters()])
    monkeypatch.setattr(fast_attention, "RECOMPUTE_ATTENTION", True)
    recomputed = torch.autograd.grad(rcca(x).square().sum(), [x, *rcca.parameters()])
    for a, b in zip(stored, recomputed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rcca_gradcheck_through_output_and_attention():
    rcca = make_rcca(c=4, recurrence=2)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)

    def both(inp):
        out, attentions = rcca(inp, return_attention=True)
        return (out, *attentions)

    assert torch.autograd.gradcheck(both, (x,))


def test_rcca_parameter_gradients_without_input_gradient():
    rcca = make_rcca()
    x = torch.randn(1, 6, 4, 5, dtype=torch.float64)  # no requires_grad: grad_x is skipped
    out = rcca(x)
    ref_out, _ = reference_rcca(rcca, x, 2)
    weight = torch.randn_like(out)
    fast = torch.autograd.grad((out * weight).sum(), list(rcca.parameters()))
    ref = torch.autograd.grad((ref_out * weight).sum(), list(rcca.parameters()))
    for g_fast, g_ref in zip(fast, ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9)


def fused_weights(rcca):
    cca = rcca.cca
    weight, bias = fused_projection_weights(cca.query_conv, cca.key_conv, cca.value_conv, cca.gamma)
    return weight.detach().requires_grad_(), bias.detach().requires_grad_()


def test_step_function_gradcheck_on_channels_first_input():
    weight, bias = fused_weights(make_rcca(c=4, qk=2))
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)  # NCHW, read in place

    def step(inp, w, b):
        return CrissCrossStepFunction.apply(inp.permute(0, 2, 3, 1), w, b, 2, True)

    assert torch.autograd.gradcheck(step, (x, weight, bias))


def test_step_function_gradcheck_on_channels_last_input():
    weight, bias = fused_weights(make_rcca(c=4, qk=2))
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)  # (B, h, w, C)
    assert torch.autograd.gradcheck(lambda *t: CrissCrossStepFunction.apply(*t, 2, True), (x, weight, bias))


def test_double_backward_raises_a_clear_error():
    rcca = make_rcca()
    x = torch.randn(1, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(rcca(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable|does not require grad"):
        grad.sum().backward()


def test_attention_only_function_gradcheck():
    qkv = torch.randn(2, 4, 3, 2 + 2 + 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: CrissCrossFunction.apply(t, 2, True), (qkv,))
    assert torch.autograd.gradcheck(lambda t: CrissCrossFunction.apply(t, 2, False)[0], (qkv,))


def test_gradient_keeps_the_input_layout():
    rcca = make_rcca()
    for x in (torch.randn(1, 6, 17, 19, dtype=torch.float64),
              torch.randn(1, 6, 17, 19, dtype=torch.float64).contiguous(memory_format=torch.channels_last)):
        x.requires_grad_(True)
        rcca(x).sum().backward()
        assert x.grad.stride() == x.stride()


def test_output_keeps_the_input_memory_format():
    rcca = make_rcca()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    assert rcca(x).is_contiguous()
    channels_last = x.contiguous(memory_format=torch.channels_last)
    out = rcca(channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, rcca(x), rtol=1e-12, atol=1e-12)
    assert CrissCrossAttention(6).double()(channels_last).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("b,h,w", [(2, 5, 4), (1, 17, 19)])  # 323 pixels: the blocked layout copies too
def test_attention_on_channels_last_tensors_answers_in_v_layout_and_equals_reference(b, h, w):
    """criss_cross_attention on channels-last q, k, v: a channels-last output (no layout copy), the reference's
    values and gradients; NCHW v gives a contiguous output."""
    torch.manual_seed(1)
    q, k = torch.randn(b, 3, h, w, dtype=torch.float64), torch.randn(b, 3, h, w, dtype=torch.float64)
    v = torch.randn(b, 5, h, w, dtype=torch.float64)
    grad_out, grad_attn = torch.randn_like(v), torch.randn(b, h, w, h + w, dtype=torch.float64)
    want = criss_cross_attention_reference(q, k, v)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        inputs = [t.contiguous(memory_format=memory_format).requires_grad_() for t in (q, k, v)]
        out, attn = criss_cross_attention(*inputs)
        assert out.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(out, want[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(attn, want[1], rtol=1e-10, atol=1e-10)
        got = torch.autograd.grad((out * grad_out).sum() + (attn * grad_attn).sum(), inputs)
        reference_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        ref_out, ref_attn = criss_cross_attention_reference(*reference_inputs)
        expected = torch.autograd.grad((ref_out * grad_out).sum() + (ref_attn * grad_attn).sum(), reference_inputs)
        for g_fast, g_ref, given in zip(got, expected, inputs, strict=True):
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9)
            # NCHW in, NCHW gradient; channels-last in, a channel-contiguous view of the stacked q, k, v gradient
            assert g_fast.is_contiguous() if given.is_contiguous() else g_fast.stride(1) == 1


def test_float32_matches_float64_reference():
    rcca = make_rcca(c=32, qk=4).float()
    x = torch.randn(2, 32, 13, 11)
    ref_out, _ = reference_rcca(rcca.double(), x.double(), 2)
    torch.testing.assert_close(rcca.float()(x).double(), ref_out, rtol=1e-4, atol=1e-4)


def test_joint_softmax_is_exact_for_extreme_scores():
    # Large scores would overflow exp() without the shared max; rows and columns must share it.
    q = torch.randn(1, 4, 5, 3, dtype=torch.float64) * 40
    k = torch.randn(1, 4, 5, 3, dtype=torch.float64) * 40
    attn_col, attn_row = joint_softmax_attention(q, k)
    total = attn_col.sum(-1).transpose(1, 2) + attn_row.sum(-1)  # (B, h, w)
    torch.testing.assert_close(total, torch.ones_like(total))
    assert torch.isfinite(attn_col).all() and torch.isfinite(attn_row).all()
    v = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    _, ref = criss_cross_attention_reference(q.permute(0, 3, 1, 2), k.permute(0, 3, 1, 2), v)
    _, got = criss_cross_attention(q.permute(0, 3, 1, 2), k.permute(0, 3, 1, 2), v)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("block", [4, 256])
@pytest.mark.parametrize("method", ["blocked", "torch", None])  # None: whichever this CPU measured faster
def test_layout_copies_are_exact_every_way(block, method):
    source = torch.randn(2, 7, 9, 5)  # (B, h, w, C) contiguous
    target = torch.empty(2, 5, 7, 9).permute(0, 2, 3, 1)  # an NCHW buffer seen as (B, h, w, C)
    copy_between_layouts(target, source, block=block, method=method)
    torch.testing.assert_close(target, source, rtol=0, atol=0)
    torch.testing.assert_close(transpose_to_channels_first(source), source.permute(0, 3, 1, 2))
    back = torch.empty(2, 7, 9, 5)  # and the other way: NCHW -> NHWC
    copy_between_layouts(back, target, block=block, method=method)
    torch.testing.assert_close(back, source, rtol=0, atol=0)
    odd = torch.randn(2, 9, 7, 5).transpose(1, 2)  # neither layout: left to copy_
    copy_between_layouts(back, odd, block=block, method=method)
    torch.testing.assert_close(back, odd, rtol=0, atol=0)


def test_the_layout_copy_is_chosen_once_per_direction_and_shape(monkeypatch):
    monkeypatch.setattr(fast_attention, "_BLOCKED_COPY_FASTER", OrderedDict())
    timed = []
    real = fast_attention._blocked_copy_is_faster
    monkeypatch.setattr(fast_attention, "_blocked_copy_is_faster", lambda *a, **k: timed.append(a[3]) or real(*a, **k))
    source = torch.randn(1, 20, 30, 8)  # (B, h, w, C): 600 pixels, more than a block
    target = torch.empty(1, 8, 20, 30).permute(0, 2, 3, 1)  # (B, h, w, C) view of an NCHW buffer
    for _ in range(3):
        copy_between_layouts(target, source)
        copy_between_layouts(source, target)
    assert timed == [True, False]  # each direction timed once, then its choice reused
    assert [key[:2] for key in fast_attention._BLOCKED_COPY_FASTER] == [(True, (1, 20, 30, 8)), (False, (1, 20, 30, 8))]
    monkeypatch.setattr(fast_attention, "MAX_COPY_CHOICES", 2)
    wide = torch.randn(1, 20, 40, 8)  # a third shape: the oldest choice makes room
    copy_between_layouts(torch.empty(1, 8, 20, 40).permute(0, 2, 3, 1), wide)
    assert [key[:2] for key in fast_attention._BLOCKED_COPY_FASTER] == [(False, (1, 20, 30, 8)), (True, (1, 20, 40, 8))]
    with pytest.raises(ValueError, match="method must be one of"):
        copy_between_layouts(target, source, method="fast")


def test_step_accepts_any_strides():
    weight, bias = fused_weights(make_rcca())
    x = torch.randn(1, 6, 4, 10, dtype=torch.float64)[..., ::2]  # (B, C, h, w) with a step in w
    out, _ = criss_cross_step(x.permute(0, 2, 3, 1), weight, bias, 2)
    ref_out, _ = reference_rcca(make_rcca(recurrence=1), x, 1)
    torch.testing.assert_close(out.permute(0, 3, 1, 2), ref_out, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fast_path_matches_cpu():
    rcca = make_rcca(c=8, qk=2, recurrence=2)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64, requires_grad=True)
    out, attentions = rcca(x, return_attention=True)
    out.sum().backward()
    x_gpu = x.detach().cuda().requires_grad_()
    rcca_gpu = make_rcca(c=8, qk=2, recurrence=2).cuda()
    out_gpu, attentions_gpu = rcca_gpu(x_gpu, return_attention=True)
    out_gpu.sum().backward()
    torch.testing.assert_close(out_gpu.cpu(), out)
    torch.testing.assert_close(attentions_gpu[-1].cpu(), attentions[-1])
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad)


# --- autocast (mixed precision) --------------------------------------------------------------------------

AUTOCAST_CASES = [("cpu", torch.bfloat16)] + (
    [("cuda", torch.float16), ("cuda", torch.bfloat16)] if torch.cuda.is_available() else []
)


@pytest.mark.parametrize("device,dtype", AUTOCAST_CASES)
def test_rcca_under_autocast_matches_float32_reference(device, dtype):
    rcca = make_rcca(c=16, qk=4, recurrence=2).float().to(device)
    x = torch.randn(2, 16, 9, 11, device=device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        low = torch.nn.functional.conv2d(x, torch.eye(16, device=device).view(16, 16, 1, 1))  # (B, C, h, w) in dtype
        assert low.dtype == dtype
        out, attentions = rcca(low, return_attention=True)
    assert out.dtype == dtype and all(a.dtype == torch.float32 for a in attentions)
    ref_out, ref_attentions = reference_rcca(rcca, x, 2)

    # The input was rounded to the autocast dtype before the attention; nothing else loses precision.
    tolerance = {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(out.float(), ref_out, **tolerance)
    for got, want in zip(attentions, ref_attentions, strict=True):
        torch.testing.assert_close(got, want, **tolerance)
    weights = [torch.randn_like(ref_out)] + [torch.randn_like(a) for a in ref_attentions]
    inputs = [x, *rcca.parameters()]
    fast = torch.autograd.grad(loss_of(out.float(), attentions, weights), inputs)
    ref = torch.autograd.grad(loss_of(ref_out, ref_attentions, weights), inputs)
    for name, g_fast, g_ref in zip(["x", *dict(rcca.named_parameters())], fast, ref, strict=True):
        assert g_fast.dtype == torch.float32, name  # parameters and the float32 input keep their dtype
        scale = g_ref.abs().max().clamp(min=1e-3)
        assert (g_fast - g_ref).abs().max() <= 3e-2 * scale, name


def test_ccnet_training_steps_under_cpu_bfloat16_autocast_lower_the_loss():
    from ccnet.model import CCNet

    torch.manual_seed(0)
    model = CCNet(3, "resnet18", recurrence=2, base_width=8, head_channels=16, dropout=0.0)
    with torch.no_grad():
        model.attention.cca.gamma.fill_(1.0)
    images = torch.randn(2, 3, 32, 32)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)  # (B, H, W): three regions, learnable from position
    labels[:, :, 16:], labels[:, 16:, :] = 1, 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(images)
            loss = torch.nn.functional.cross_entropy(output.logits.float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.attention.cca.query_conv.weight.grad.abs().sum() > 0
    assert losses[-1] < 0.5 * losses[0]


def test_stacking_channels_last_equals_cat_permute_and_passes_gradients_back():
    from ccnet.fast_attention import StackChannelsLast

    parts = [torch.randn(2, c, 17, 19, dtype=torch.float64, requires_grad=True) for c in (3, 3, 8)]
    stacked = StackChannelsLast.apply(*parts)  # (B, h, w, 14), 323 pixels: the blocked path
    reference = torch.cat(parts, 1).permute(0, 2, 3, 1)
    assert stacked.is_contiguous()
    torch.testing.assert_close(stacked, reference, rtol=0, atol=0)
    grad = torch.randn_like(stacked)
    got = torch.autograd.grad(stacked, parts, grad)
    want = torch.autograd.grad(reference, parts, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert a.is_contiguous()  # NCHW inputs get NCHW gradients, copied the fast way

    mixed = [parts[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_(), parts[1], parts[2]]
    got = torch.autograd.grad(StackChannelsLast.apply(*mixed), mixed, grad)
    assert got[0].stride(1) == 1 and got[1].is_contiguous()  # channels-last input: a view of the stacked gradient
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    with pytest.raises(ValueError, match="one batch size, map size, dtype and device"):
        StackChannelsLast.apply(parts[0], parts[1].float(), parts[2])
    with pytest.raises(ValueError, match="one batch size"):
        StackChannelsLast.apply(parts[0], parts[1][:1], parts[2])


@pytest.mark.parametrize("scratch_bytes", [1, 3 * 4 * 5 * 8, 2**22])  # one matrix, 3 matrices, all at once
@pytest.mark.parametrize("accumulate", [False, True])
def test_product_into_a_strided_result_is_the_batched_product(monkeypatch, scratch_bytes, accumulate):
    """The columns of an NHWC map and a channel slice: the strided results the fast path writes, in chunks."""
    monkeypatch.setattr(fast_attention, "SCRATCH_BYTES", scratch_bytes)
    torch.manual_seed(0)
    image = torch.randn(4, 7, 12, dtype=torch.float64)  # (h, w, C): its columns are (w, h, C) with stride w*C
    results = {"columns": image.transpose(0, 1)[..., :5], "slice": image[..., 2:7]}  # (7, 4, 5), (4, 7, 5)
    for name, result in results.items():
        n, m, p = result.shape
        a, b = torch.randn(n, m, 8, dtype=torch.float64), torch.randn(n, 8, p, dtype=torch.float64)
        before = result.clone()
        expected = torch.bmm(a, b) + (before if accumulate else 0)  # (n, m, p)
        untouched = image.clone()
        product_into(result, a, b, accumulate=accumulate)
        torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12, msg=name)
        untouched_mask = torch.ones_like(image, dtype=torch.bool)
        (untouched_mask.transpose(0, 1)[..., :5] if name == "columns" else untouched_mask[..., 2:7]).fill_(False)
        assert torch.equal(image[untouched_mask], untouched[untouched_mask]), f"{name}: wrote outside its view"


def test_a_traced_layout_copy_times_nothing_and_records_nothing(monkeypatch):
    """Under torch.compile's tracing the blocked copy is used as is: no timing in a graph, no global choice
    that would then bind the eager calls."""
    monkeypatch.setattr(fast_attention, "_BLOCKED_COPY_FASTER", OrderedDict())
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(fast_attention, "_blocked_copy_is_faster", lambda *a, **k: pytest.fail("timed while tracing"))
    source = torch.randn(1, 20, 30, 8)
    target = torch.empty(1, 8, 20, 30).permute(0, 2, 3, 1)
    copy_between_layouts(target, source)
    torch.testing.assert_close(target, source, rtol=0, atol=0)
    assert not fast_attention._BLOCKED_COPY_FASTER
