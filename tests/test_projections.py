"""The projections' two GEMM backends (ccnet.projections): each way against plain float64 products, the whole
criss-cross step with each way forced against the dense reference, and how a way is chosen."""

from collections import OrderedDict

import pytest
import torch

from ccnet import projections
from tests.test_fast_attention import SHAPES, loss_of, make_rcca, reference_rcca

WAYS = ("matmul", "convolution")


def channels_last_maps(b, h, w, c, channels_first: bool, dtype=torch.float64):
    """(B, h, w, C) random map: contiguous NHWC, or an NCHW buffer seen as (B, h, w, C) (the first loop's input)."""
    if channels_first:
        return torch.randn(b, c, h, w, dtype=dtype).permute(0, 2, 3, 1)
    return torch.randn(b, h, w, c, dtype=dtype)


@pytest.fixture(autouse=True)
def timed_choice(monkeypatch):
    """Every test starts from the timed choice, whatever CCNET_PROJECTION_METHOD the shell set."""
    monkeypatch.setattr(projections, "PROJECTION_METHOD", None)


@pytest.fixture
def forced(monkeypatch):
    def force(way):
        monkeypatch.setattr(projections, "PROJECTION_METHOD", way)

    return force


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("b,h,w", SHAPES)
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("chunk_bytes", [None, 1, 200])  # oneDNN's way whole, one row at a time, a few rows
def test_each_way_computes_the_products_exactly(monkeypatch, forced, way, b, h, w, channels_first, chunk_bytes):
    forced(way)
    if chunk_bytes is not None:
        monkeypatch.setattr(projections, "CHUNK_BYTES", chunk_bytes)
    c, out_channels = 6, 10
    x = channels_last_maps(b, h, w, c, channels_first)  # (B, h, w, C)
    weight, bias = torch.randn(out_channels, c, dtype=torch.float64), torch.randn(out_channels, dtype=torch.float64)
    grad_qkv = torch.randn(b, h, w, out_channels, dtype=torch.float64)  # (B, h, w, 2C'+C)
    residual = torch.randn(b, h, w, c, dtype=torch.float64)  # (B, h, w, C)
    pixels, grad_pixels = x.reshape(-1, c), grad_qkv.reshape(-1, out_channels)

    qkv = projections.project(x, weight, bias)
    assert qkv.is_contiguous() and qkv.shape == (b, h, w, out_channels)
    torch.testing.assert_close(qkv.reshape(-1, out_channels), pixels @ weight.t() + bias, rtol=1e-12, atol=1e-12)

    expected_input_gradient = residual.reshape(-1, c) + grad_pixels @ weight
    for given in (residual, None):
        got = projections.input_gradient(grad_qkv, weight, given)
        assert got.is_contiguous() and got.shape == (b, h, w, c)
        want = expected_input_gradient if given is not None else grad_pixels @ weight
        torch.testing.assert_close(got.reshape(-1, c), want, rtol=1e-12, atol=1e-12)
    accumulated = residual.clone()
    projections.add_input_gradient(accumulated, grad_qkv, weight)
    torch.testing.assert_close(accumulated.reshape(-1, c), expected_input_gradient, rtol=1e-12, atol=1e-12)

    grad_weight, grad_bias = projections.weight_gradients(grad_qkv, x, weight, True, True)
    torch.testing.assert_close(grad_weight, grad_pixels.t() @ pixels, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_bias, grad_pixels.sum(0), rtol=1e-12, atol=1e-12)
    assert projections.weight_gradients(grad_qkv, x, weight, False, False) == (None, None)
    only_bias = projections.weight_gradients(grad_qkv, x, weight, False, True)
    assert only_bias[0] is None
    torch.testing.assert_close(only_bias[1], grad_pixels.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("chunk_bytes", [None, 20_000])
def test_the_two_ways_agree_in_float32(monkeypatch, forced, channels_first, chunk_bytes):
    """float32 is where oneDNN's own kernels run (float64 convolutions take PyTorch's slow path)."""
    if chunk_bytes is not None:
        monkeypatch.setattr(projections, "CHUNK_BYTES", chunk_bytes)
    c, out_channels = 64, 80
    x = channels_last_maps(2, 13, 17, c, channels_first, torch.float32)
    weight, bias = torch.randn(out_channels, c) / c**0.5, torch.randn(out_channels)
    grad_qkv = torch.randn(2, 13, 17, out_channels)
    residual = torch.randn(2, 13, 17, c)
    results = {}
    for way in WAYS:
        forced(way)
        accumulated = residual.clone()
        projections.add_input_gradient(accumulated, grad_qkv, weight)
        results[way] = (projections.project(x, weight, bias), projections.input_gradient(grad_qkv, weight, residual),
                        accumulated, *projections.weight_gradients(grad_qkv, x, weight, True, True))  # fmt: skip
    for by_matmul, by_convolution in zip(results["matmul"], results["convolution"], strict=True):
        torch.testing.assert_close(by_convolution, by_matmul, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("b,h,w", [(2, 5, 4), (1, 1, 5), (2, 17, 19)])
def test_the_step_with_each_way_equals_the_reference(forced, way, b, h, w):
    forced(way)
    rcca = make_rcca(recurrence=2)
    x = torch.randn(b, 6, h, w, dtype=torch.float64, requires_grad=True)
    out, attentions = rcca(x, return_attention=True)
    ref_out, ref_attentions = reference_rcca(rcca, x, 2)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    weights = [torch.randn_like(out)] + [torch.randn_like(a) for a in attentions]
    inputs = [x, *rcca.parameters()]
    fast = torch.autograd.grad(loss_of(out, attentions, weights), inputs)
    ref = torch.autograd.grad(loss_of(ref_out, ref_attentions, weights), inputs)
    for g_fast, g_ref in zip(fast, ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-9)


def test_row_chunks_cover_every_row_once():
    x = torch.randn(3, 7, 5, 4)
    assert projections._row_chunks(x) == [(slice(None),)]  # fits: all at once
    covered = torch.zeros(3, 7, dtype=torch.int64)
    chunks = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projections, "CHUNK_BYTES", 2 * 5 * 4 * 4)  # two rows of one image
        chunks = projections._row_chunks(x)
    for rows in chunks:
        covered[rows[:2]] += 1
        assert x[rows].shape[0] == 1 and x[rows].shape[1] <= 2 and x[rows].is_contiguous()
    assert torch.equal(covered, torch.ones(3, 7, dtype=torch.int64)) and len(chunks) == 3 * 4


def test_a_way_is_timed_once_per_operation_and_shape(monkeypatch):
    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    timed = []
    real = projections.fastest_way
    monkeypatch.setattr(projections, "fastest_way", lambda ways, **k: timed.append(sorted(ways)) or real(ways, **k))
    weight, bias = torch.randn(10, 6), torch.randn(10)
    x = torch.randn(1, 20, 30, 6)
    for _ in range(3):
        projections.project(x, weight, bias)
    assert len(timed) == 1 and timed[0] == sorted(WAYS)
    (key, chosen), = projections._FASTER_PROJECTION.items()  # fmt: skip
    assert key[0] == "project" and chosen in WAYS
    projections.project(torch.randn(1, 6, 20, 30).permute(0, 2, 3, 1), weight, bias)  # other strides: timed anew
    assert len(timed) == 2
    monkeypatch.setattr(projections, "MAX_PROJECTION_CHOICES", 2)
    projections.project(torch.randn(1, 21, 30, 6), weight, bias)  # a third shape: the oldest choice makes room
    assert len(projections._FASTER_PROJECTION) == 2
    assert all(key[1][0] != (tuple(x.shape), x.stride()) for key in projections._FASTER_PROJECTION)


def test_a_traced_projection_times_nothing_and_takes_matmul(monkeypatch):
    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(projections, "fastest_way", lambda *a, **k: pytest.fail("timed while tracing"))
    monkeypatch.setattr(projections, "_project_by_convolution", lambda *a: pytest.fail("not matmul"))
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(10, 6), torch.randn(10)
    torch.testing.assert_close(projections.project(x, weight, bias), x @ weight.t() + bias)
    assert not projections._FASTER_PROJECTION


def test_a_flop_counter_sees_one_product_and_no_timing(monkeypatch):
    """Under a dispatch mode (FlopCounterMode: the report's FLOP counts) the probe's timing calls would be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    monkeypatch.setattr(projections, "fastest_way", lambda *a, **k: pytest.fail("timed under a FLOP counter"))
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(10, 6), torch.randn(10)
    with FlopCounterMode(display=False) as counter:
        projections.project(x, weight, bias)
    assert counter.get_total_flops() == 2 * 4 * 5 * 6 * 10
    assert not projections._FASTER_PROJECTION


def test_an_unknown_forced_way_is_a_clear_error(forced):
    forced("fast")
    with pytest.raises(ValueError, match="CCNET_PROJECTION_METHOD\\) must be one of"):
        projections.project(torch.randn(1, 2, 2, 3), torch.randn(4, 3), torch.randn(4))


def test_the_environment_variable_forces_a_way_in_a_new_process():
    import os
    import subprocess
    import sys

    code = ("import torch; from ccnet import projections as p; p._project_by_convolution = None; "
            "p.project(torch.randn(1, 2, 2, 3), torch.randn(4, 3), torch.randn(4)); "
            "print(p.PROJECTION_METHOD)")  # fmt: skip
    env = {**os.environ, "CCNET_PROJECTION_METHOD": "matmul"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "matmul"


def test_fastest_way_picks_the_quicker_call():
    import time

    calls = {"slow": 0, "quick": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.01)

    def quick():
        calls["quick"] += 1

    assert projections.fastest_way({"slow": slow, "quick": quick}, rounds=2) == "quick"
    assert calls == {"slow": 2, "quick": 2}


def test_forced_method_applies_inside_the_block_only(monkeypatch):
    monkeypatch.setattr(projections, "_project_by_matmul", lambda *a: pytest.fail("matmul inside the block"))
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(10, 6), torch.randn(10)
    with projections.forced_method("convolution"):
        got = projections.project(x, weight, bias)
    torch.testing.assert_close(got, x @ weight.t() + bias, rtol=1e-5, atol=1e-5)
    assert projections.PROJECTION_METHOD is None
    with pytest.raises(ValueError, match="method must be one of"), projections.forced_method("fast"):
        pass
    with pytest.raises(RuntimeError), projections.forced_method("matmul"):
        raise RuntimeError("an error inside the block")
    assert projections.PROJECTION_METHOD is None  # restored after the error too


def test_a_way_that_disagrees_with_matmul_is_never_chosen(monkeypatch):
    """A wrong library kernel on some CPU: the probe compares each way's result with torch.mm's and keeps mm."""
    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    monkeypatch.setattr(projections, "_project_by_convolution", lambda x, weight, bias: 1.5 * (x @ weight.t() + bias))
    pick_convolution = lambda ways, **k: [way() for way in ways.values()] and "convolution"  # noqa: E731
    monkeypatch.setattr(projections, "fastest_way", pick_convolution)
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(10, 6), torch.randn(10)
    with pytest.warns(RuntimeWarning, match="disagrees with torch.mm"):
        got = projections.project(x, weight, bias)
    torch.testing.assert_close(got, x @ weight.t() + bias)
    assert list(projections._FASTER_PROJECTION.values()) == ["matmul"]


def test_results_agree_on_tensors_tuples_and_none():
    a = torch.randn(3, 4)
    assert projections.results_agree(a + 1e-6, a)
    assert not projections.results_agree(a * 1.5, a)
    assert projections.results_agree((a, None), (a.clone(), None))
    assert not projections.results_agree((a, None), (a, a))
    assert not projections.results_agree(a[:2], a)
    assert not projections.results_agree(torch.full_like(a, float("nan")), a)


@pytest.mark.parametrize("way", WAYS)
def test_the_float32_step_with_each_way_and_small_chunks_matches_the_reference(monkeypatch, forced, way):
    """float32, where oneDNN's own kernels run, through the whole step: two images, an NCHW first loop and an NHWC
    second, oneDNN's row chunks a few rows each."""
    forced(way)
    monkeypatch.setattr(projections, "CHUNK_BYTES", 2 * 19 * 16 * 4)  # two rows of one image
    rcca = make_rcca(c=16, qk=4, recurrence=2)
    x = torch.randn(2, 16, 17, 19, dtype=torch.float64, requires_grad=True)
    ref_out, ref_attentions = reference_rcca(rcca, x, 2)
    weights = [torch.randn_like(ref_out)] + [torch.randn_like(a) for a in ref_attentions]
    ref = torch.autograd.grad(loss_of(ref_out, ref_attentions, weights), [x, *rcca.parameters()])
    rcca32, x32 = rcca.float(), x.detach().float().requires_grad_()
    out, attentions = rcca32(x32, return_attention=True)
    fast = torch.autograd.grad(loss_of(out, attentions, [w.float() for w in weights]), [x32, *rcca32.parameters()])
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-4, atol=1e-4)
    for g_fast, g_ref in zip(fast, ref, strict=True):
        # the key bias's gradient is exactly 0 (a softmax ignores a constant): float32 leaves about 1e-6 there
        torch.testing.assert_close(g_fast.double(), g_ref, rtol=1e-3, atol=max(1e-3 * g_ref.abs().max().item(), 1e-5))


def test_agreement_is_checked_on_random_tensors_not_the_callers(monkeypatch):
    """A first batch of zeros makes every way agree; the check draws its own inputs, so a wrong kernel is still
    caught."""
    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    monkeypatch.setattr(projections, "_project_by_convolution", lambda x, weight, bias: 1.5 * (x @ weight.t() + bias))
    pick_convolution = lambda ways, **k: "convolution"  # noqa: E731
    monkeypatch.setattr(projections, "fastest_way", pick_convolution)
    x, weight, bias = torch.zeros(1, 4, 5, 6), torch.randn(10, 6), torch.zeros(10)
    with pytest.warns(RuntimeWarning, match="disagrees with torch.mm"):
        projections.project(x, weight, bias)
    assert list(projections._FASTER_PROJECTION.values()) == ["matmul"]


def test_deterministic_algorithms_and_other_devices_take_matmul_untimed(monkeypatch):
    monkeypatch.setattr(projections, "_FASTER_PROJECTION", OrderedDict())
    monkeypatch.setattr(projections, "fastest_way", lambda *a, **k: pytest.fail("timed"))
    monkeypatch.setattr(projections, "_project_by_convolution", lambda *a: pytest.fail("not matmul"))
    x, weight, bias = torch.randn(1, 4, 5, 6), torch.randn(10, 6), torch.randn(10)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.testing.assert_close(projections.project(x, weight, bias), x @ weight.t() + bias)
    finally:
        torch.use_deterministic_algorithms(before)
    monkeypatch.setattr(projections, "PROJECTION_METHOD", "convolution")  # forcing applies to CPU tensors only
    on_meta = projections.project(x.to("meta"), weight.to("meta"), bias.to("meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == (1, 4, 5, 10)
    assert not projections._FASTER_PROJECTION
