"""The benchmark tables format what a run measured, on CPU and on CUDA (where only one memory measure exists)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).absolute().parent.parent


def _load(name: str):
    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their sibling `common`
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_attention():
    return _load("bench_attention")


def _result(device: str, rows: list[dict]) -> dict:
    args = {"mode": "train", "recurrence": 2, "channels": 512, "rounds": 5, "device": device}
    rows[-1]["load"] = "quiet"
    return {"rows": rows, "machine": "test machine", "args": args}


def test_cuda_table_has_sub_millisecond_times_and_targets(bench_attention):
    rows = [
        {"size": "97x97x512", "method": bench_attention.BASELINE, "time_ms": 4.33, "median_ms": 5.3, "speedup": 1.0,
         "peak_mb": 160.9},
        {"size": "97x97x512", "method": bench_attention.OURS, "time_ms": 0.333, "median_ms": 0.388, "speedup": 1.3,
         "peak_mb": 148.1},
    ]
    bench_attention._add_memory_ratios(rows)
    table = bench_attention.format_table(_result("cuda", rows))
    assert "| 97x97x512 | ours (fused, default) | 0.333 (0.388) | **1.30x** | 148 | 0.92x | - | - |" in table
    assert "CUDA peak (MB)" in table
    assert "- NOT met: 97x97x512: 1.30x the einsum speed (target >= 1.5x), peak 0.92x of einsum's" in table


def test_cpu_table_reports_both_memory_measures(bench_attention):
    rows = [
        {"size": "97x97x512", "method": bench_attention.BASELINE, "time_ms": 900.0, "median_ms": 910.0, "speedup": 1.0,
         "peak_mb": 400.0, "alloc_mb": 300.0},
        {"size": "97x97x512", "method": bench_attention.OURS, "time_ms": 400.0, "median_ms": 420.0, "speedup": 2.25,
         "peak_mb": 200.0, "alloc_mb": 150.0},
    ]
    bench_attention._add_memory_ratios(rows)
    table = bench_attention.format_table(_result("cpu", rows))
    assert "| 97x97x512 | ours (fused, default) | 400 (420) | **2.25x** | 200 | 0.50x | 150 | 0.50x |" in table
    assert "- met: 97x97x512: 2.25x the einsum speed (target >= 1.5x), peak 0.50x and allocator peak 0.50x" in table


def test_training_step_benchmark_runs_every_variant_and_tables_ratios(monkeypatch):
    bench = _load("bench_training_step")
    monkeypatch.setattr(bench.common, "wait_until_quiet", lambda **kwargs: 0.0)
    for config in bench.CONFIGS.values():  # tiny crops: the test checks the plumbing, not the speed
        monkeypatch.setitem(config, "crop", (64, 64))
    args = bench.parse_args(["--rounds", "1", "--batch", "1", "--only", "mobilenet_v2", "--data-root", ""])
    results = bench.run(args, log=lambda message: None)
    measured = results["configs"]["mobilenet_v2"]
    assert set(measured["timed"]) == set(bench.VARIANTS) and measured["data"] is None
    assert set(measured["parts"]["float32"]) >= {"backbone forward", "backward", "attention alone (forward + backward)"}
    table = bench.format_table(results)
    assert "| float32 | " in table and "| 1.00x |" in table and "batch 1 of 64x64" in table
    assert "avx512_bf16" in table


def test_training_throughput_benchmark_times_real_trainers_in_every_variant(monkeypatch, tmp_path, camvid_factory):
    import yaml

    from tests.conftest import tiny_training_config

    bench = _load("bench_training_throughput")
    monkeypatch.setattr(bench.common, "wait_until_quiet", lambda **kwargs: 0.0)
    root = camvid_factory({"train": 4, "val": 2})
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_training_config(root)))
    args = bench.parse_args(["--config", str(config_file), "--data-root", str(root), "--rounds", "2", "--steps", "1",
                             "--warmup", "1"])  # fmt: skip
    results = bench.run(args, log=lambda message: None)
    assert set(results["samples"]) == set(args.variants) == {"float32", "float32 channels-last", "bfloat16 autocast"}
    assert all(len(times) == 2 and min(times) > 0 for times in results["samples"].values())
    table = bench.format_table(results)
    assert "| float32 | " in table and "| 1.00x |" in table and "batch 2" in table and "avx512_bf16" in table
    with pytest.raises(SystemExit):  # no dataset: a clear usage error, not a crash deep in the loader
        monkeypatch.delenv("CAMVID_ROOT", raising=False)
        bench.parse_args(["--rounds", "1"])


def test_head_step_benchmark_times_every_variant_of_each_head(monkeypatch):
    bench = _load("bench_head_step")
    monkeypatch.setattr(bench.common, "wait_until_quiet", lambda **kwargs: 0.0)
    monkeypatch.setitem(bench.DEFAULTS, "crop_cells", (4, 6))  # tiny crops: the plumbing, not the speed
    monkeypatch.setitem(bench.DEFAULTS, "batch_size", 2)
    args = bench.parse_args(["--rounds", "1", "--steps", "1", "--kinds", "r2", "r0"])
    results = bench.run(args, log=lambda message: None)
    assert set(results["kinds"]) == {"r2", "r0"}
    assert all(set(samples) == set(bench.variants(False)) for samples in results["kinds"].values())
    assert all(t > 0 for samples in results["kinds"].values() for times in samples.values() for t in times)
    table = bench.format_table(results)
    assert "| r2 | float32 | " in table and "| r0 | bfloat16 autocast | " in table and "| 1.00x |" in table


def test_roofline_counts_the_papers_flops_and_prints_a_table(monkeypatch):
    bench = _load("bench_roofline")
    # the issue's count: about 12.5 GFLOP for two loops, forward and backward, at 97 x 97 x 512
    assert 2 * bench.attention_flops(1, 97, 97, 512) / 1e9 == pytest.approx(12.6, abs=0.1)
    monkeypatch.setitem(bench.SIZES, "tiny", (2, 8, 10, 16))
    results = bench.measure(["tiny"], rounds=2, gemm_side=64, log=lambda message: None)
    assert results["gemm_gflops"] > 0 and results["convolution_gflops"] > 0
    tiny = results["sizes"]["tiny"]
    assert set(tiny["seconds"]) == {"ours|NCHW", "einsum|NCHW", "ours|channels-last", "einsum|channels-last"}
    assert all(len(t) == 2 and min(t) > 0 for t in tiny["seconds"].values()) and len(tiny["ceiling_seconds"]) == 2
    fractions = bench.ceiling_fractions(tiny, 64, "ours|NCHW")  # per round, against that round's own ceiling
    gemm_rates = [2 * 64**3 / c for c in tiny["ceiling_seconds"]]
    want = [tiny["flops"] / t / rate for t, rate in zip(tiny["seconds"]["ours|NCHW"], gemm_rates, strict=True)]
    assert fractions == pytest.approx(want)
    table = bench.format_table(results)
    assert "| tiny | 2 x 8 x 10 x 16 |" in table and "| NCHW | ours |" in table
    assert "| channels-last | einsum |" in table
    assert "Ceiling: float32 `torch.mm` 64^3" in table and "1x1 convolution (oneDNN)" in table
    # The whole module: the issue's 12.6 GFLOP of attention plus 2 loops x 3 x 2 x 9409 x 512 x 640 of projections
    assert bench.module_flops(1, 97, 97, 512, 2) / 1e9 == pytest.approx(12.6 + 37.0, abs=0.1)
    results["module"] = bench.measure_module("tiny", rounds=2, gemm_side=64, log=lambda message: None)
    assert len(results["module"]["ceiling_seconds"]) == 2 and set(results["module"]["seconds"]) == {"ours", "einsum"}
    module = bench.format_module(results)
    assert "of the ceiling, same round (median; range)" in module and "`torch.mm` 64^3 timed in every round" in module
    assert "| ours |" in module and "| einsum |" in module and "| floor: every FLOP at the ceiling |" in module
    assert "is the most any could gain over einsum on this machine." in module
    results["convolution_gflops"] = 2 * results["gemm_gflops"]  # a CPU where oneDNN is faster: its floor too
    assert "| floor: every FLOP at the 1x1 convolution's rate |" in bench.format_module(results)


def test_profile_groups_every_operation_and_counts_the_products_flops():
    bench = _load("profile_attention")
    assert bench._product_flops("aten::bmm", ((97, 97, 64), (97, 64, 97))) == 2.0 * 97 * 97 * 64 * 97
    assert bench._product_flops("aten::baddbmm", ((3, 4, 5), (3, 4, 6), (3, 6, 5))) == 2.0 * 3 * 4 * 6 * 5
    assert bench._product_flops("aten::addmm", ((5,), (7, 3), (3, 5))) == 2.0 * 7 * 3 * 5
    assert bench.kind_of("aten::bmm") == "matrix products" and bench.kind_of("aten::select") == "views (no data moved)"
    for method in ("ours (fused, default)", "einsum (common)"):
        result = bench.profile_method(method, 6, 7, 16, loops=2, rounds=1)
        assert result["by_kind"]["matrix products"] > 0 and result["gemm_flops"] > 0
        assert result["by_kind"]["matrix products"] < result["total_ms"]  # the rest of the step is there too
        text = bench.format_profile(method, result, ceiling=100.0, top=3)
        assert text.startswith(f"**{method}**") and "| matrix products |" in text and "| aten::" in text
    part = bench.profile_step(bench.attention_part_step(6, 7, 16), rounds=1)
    assert part["by_kind"]["matrix products"] > 0 and part["gemm_flops"] > 0
    rows = bench.column_products(6, 7, 16, rounds=1)  # checks each pair of formulations agrees, then times them
    assert [r["case"].split(",")[0] for r in rows] == ["aggregation"] * 3 + ["value gradient"] * 3
    assert all(r["ms"] > 0 and r["gflops"] > 0 for r in rows)
    backends = bench.projection_backends(6, 7, 16, rounds=1)  # checks each backend against torch.mm first
    assert len(backends) == 6 and all(r["gflops"] > 0 for r in backends)
    copies = bench.format_copies(bench.layout_copies(sizes=((1, 20, 30, 8),), rounds=1))
    assert "| 1 x 20 x 30 x 8 | to NCHW |" in copies and "| 1 x 20 x 30 x 8 | to NHWC |" in copies


def test_video_upload_benchmark_writes_the_issues_file_and_a_table(tmp_path):
    import cv2

    bench = _load("bench_video_upload")
    data = bench.street_video(tmp_path / "drive.mp4", seed=0)
    capture = cv2.VideoCapture(str(tmp_path / "drive.mp4"))
    assert len(data) > 10_000 and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 150
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (480, 360)
    capture.release()
    table = bench.format_table([9.0, 3.0, 4.0, 2.0])
    assert "| 9.00 s | 3.00 s (n = 3) | 9.00, 3.00, 4.00, 2.00 | < 5 s |" in table


def test_every_attention_method_runs_and_the_mkl_variant_forces_matmul(bench_attention, monkeypatch):
    from ccnet import projections

    ways = []
    real = projections._method
    monkeypatch.setattr(projections, "_method", lambda *a, **k: ways.append(real(*a, **k)) or ways[-1])
    for method in bench_attention.METHODS:
        for mode in ("train", "infer"):
            ways.clear()
            bench_attention.build_step(method, 5, 6, 16, 2, mode, "cpu")()
            if method == bench_attention.MKL_PROJECTIONS:
                assert ways and set(ways) == {"matmul"}, mode
    assert projections.PROJECTION_METHOD is None  # restored after each step


def test_cpu_claim_reports_both_goals_as_medians_of_runs(monkeypatch):
    bench = _load("bench_cpu_claim")
    roofline = bench.bench_roofline  # the very module it calls
    monkeypatch.setattr(bench.common, "wait_until_quiet", lambda **kwargs: 0.0)  # tests run beside anything
    monkeypatch.setattr(bench, "SIZE", "6x7")
    monkeypatch.setattr(bench, "CHANNELS", 16)
    monkeypatch.setitem(roofline.SIZES, "paper", (1, 6, 7, 16))
    monkeypatch.setattr(roofline, "gemm_gflops", lambda side: 1.0)  # the per-round ceiling is what counts
    monkeypatch.setattr(roofline, "convolution_gflops", lambda side: 1.0)
    args = bench.parse_args(["--runs", "2", "--rounds", "1", "--no-memory"])
    result = bench.run(args, log=lambda message: None)
    assert [set(run) for run in result["speed"]["runs"]] == [{"ours_ms", "einsum_ms", "ratio"}] * 2
    assert all(run["ratio"] == pytest.approx(run["einsum_ms"] / run["ours_ms"]) for run in result["speed"]["runs"])
    assert len(result["ceiling"]["runs"]) == 2
    layouts = {"ours|NCHW", "einsum|NCHW", "ours|channels-last", "einsum|channels-last"}
    assert set(result["ceiling"]["runs"][0]) == layouts
    table = bench.format_table(result)
    assert "| ours vs einsum, RCCA R = 2 fwd + bwd, 6x7x16 |" in table and "| 1.5x |" in table
    assert "| attention part of the GEMM ceiling, ours, channels-last q, k, v |" in table and "| 50% |" in table
    # the verdicts follow the medians
    result["speed"]["runs"] = [{"ours_ms": 100.0, "einsum_ms": e, "ratio": e / 100.0} for e in (140.0, 160.0, 170.0)]
    assert "| **1.60x** (1.40-1.70x) | 1.5x | met |" in bench.format_table(result)
    result["ceiling"]["runs"] = [dict.fromkeys(layouts, share) for share in (0.40, 0.45, 0.60)]
    assert "| attention part of the GEMM ceiling, ours, NCHW q, k, v | **45%** (40-60%) | 50% | not met |" in (
        bench.format_table(result))


def test_a_worker_benchmark_prints_its_workers_json_or_the_whole_table(capsys):
    """`--worker SPEC` (what run_worker calls in a fresh process) prints one JSON line; no --worker runs and
    prints the table, with progress kept off stdout so the table can be piped."""
    common = _load("common")
    seen = []

    def run(args, log):
        log("progress")
        seen.append(args.label)
        return {"rows": [args.label]}

    def table(result):
        return f"| {result['rows'][0]} |"

    worker_args = type("Args", (), {"worker": '{"size": 3}', "label": "w"})()
    common.worker_or_table_main(worker_args, lambda spec: {"doubled": spec["size"] * 2}, run, table)
    assert capsys.readouterr().out.strip() == '{"doubled": 6}' and not seen

    table_args = type("Args", (), {"worker": None, "label": "all"})()
    common.worker_or_table_main(table_args, lambda spec: {}, run, table)
    printed = capsys.readouterr()
    assert printed.out.strip() == "| all |" and "progress" in printed.err and seen == ["all"]


def test_a_cell_not_measured_prints_a_dash_and_a_measured_one_its_format():
    common = _load("common")
    assert common.format_or_dash(None, ".0f") == "-"
    assert common.format_or_dash(12.6, ".0f") == "13"
    assert common.format_or_dash(0.0, ".1f") == "0.0"  # zero is a measurement, not a gap
