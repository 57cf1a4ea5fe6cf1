"""`python -m training.report` on tiny synthetic checkpoints, records and CamVid, checked by recomputation."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_camvid

from ccnet.analysis import cell_centre_labels, class_attention_matrix
from ccnet.checkpoint import load_checkpoint, read_index, save_checkpoint, write_index
from ccnet.classes import CAMVID
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset, find_dataset
from ccnet.model import CCNet
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD
from training import campaign, evaluate
from training.attention_quality import attention_lift
from training.report import cli as report_cli
from training.report import common as report_common
from training.report import constants as report_constants
from training.report import goals as report_goals
from training.report import markdown as report_markdown
from training.report import measure as report_measure
from training.report import records as report_records
from training.report import summary as report_summary
from training.transforms import EvalTransform

REPO = Path(__file__).resolve().parents[1]
SUMMARY = REPO / "results" / "camvid" / "summary.json"
TINY = {"backbone": "resnet18", "base_width": 8, "head_channels": 16}
MODELS = {"camvid_r0": 0, "camvid_r1": 1, "camvid_r2": 2}  # name -> trained R
SEEDS = {"camvid_r0": (0, 1), "camvid_r1": (0,), "camvid_r2": (0, 1)}  # n = 2, 1, 2
HEAD_FEATURE_BOUND = 0.005  # a bundled head against its evaluation on cached float16 features (0.5 points)
FLOAT32_MIOU = 0.5  # what the fixture's sidecars say training measured (metadata `metrics`)
SMALL_INPUTS = ((48, 64), (97, 97))  # stands in for 360x480 and 769x769: same code, seconds not minutes
CREATED = "2026-11-26T01:00:00+00:00"
GAMMA_KEY = "gamma/head.attention.cca.gamma"
RECIPE = {
    "seed": 0,
    "model": {"backbone": "resnet18", "pretrained": "pretrained/tiny.safetensors", "gamma_init": 1.0},
    "optim": {"lr": 0.01, "batch_size": 8, "iterations": 50},
    "data": {"crop_size": [32, 48]},
    "loss": {"attention_weight": 0.4, "class_weights": "enet"},
}
SCRATCH = {
    "models": [{"name": n, "trained_recurrence": r, "ccl": False, "mIoU": 0.58 + 0.001 * r, "params": 1}
               for n, r in MODELS.items()],
    "seeds": [],
}  # fmt: skip


def _save_model(folder: Path, name: str, loops: int) -> None:
    torch.manual_seed(loops)
    model = CCNet(num_classes=11, recurrence=loops, **TINY)
    if model.attention is not None:
        with torch.no_grad():
            model.attention.cca.gamma.fill_(1.0)  # so that the loop count changes the predictions
    metadata = {
        "class_names": list(CAMVID.names),
        "palette": [list(c) for c in CAMVID.palette],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "dataset": "camvid",
        "split": "val",
        "input_size": [32, 48],
        "seed": 0,
        "metrics": {"mIoU": FLOAT32_MIOU, "step": 50},
        "train_config": RECIPE,
    }
    save_checkpoint(model, folder / name, metadata, half=True)


def _write_run(folder: Path, seed: int, best: float, lift: float | None = None, gamma: float | None = None) -> dict:
    """A run folder as training writes it; returns the numbers the report must read back.

    With `lift` and `gamma` the val records carry them (an attention model); the last record's count.
    """
    folder.mkdir(parents=True)
    start = datetime.fromisoformat(CREATED).timestamp()
    run = {"created": CREATED, "seed": seed, "device": "cuda:0", "torch": "2.x", "command": []}
    (folder / "run.json").write_text(json.dumps(run))
    rates = [100.0 + 7 * i + seed for i in range(5)]
    records = [
        {"step": 10 * (i + 1), "kind": "train", "images_per_s": r, "time": start + 3 + i} for i, r in enumerate(rates)
    ]
    records += [
        {"step": 30, "kind": "val", "mIoU": best - 0.02, "time": start + 20.0},
        {"step": 50, "kind": "val", "mIoU": best, "time": start + 42.5},
    ]
    if lift is not None:
        records[-2] |= {"lift": 1.0, "lift_per_class": {"Sky": 1.0}, GAMMA_KEY: 0.5}
        records[-1] |= {"lift": lift, "lift_per_class": {"Sky": lift}, GAMMA_KEY: gamma}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"seconds": 42.5, "rate": statistics.median(rates), "best": best, "lift": lift, "gamma": gamma}


def _attention_record(name: str, seed: int) -> tuple[float | None, float | None]:
    """(last lift, last gamma) of a fixture run: none for the baseline."""
    return (None, None) if MODELS[name] == 0 else (2.0 + seed + MODELS[name], 0.8 + 0.1 * seed)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    root = write_camvid(base / "camvid", {"val": 3}, size=(40, 56), seed=3)
    checkpoints = base / "checkpoints"
    checkpoints.mkdir()
    for name, loops in MODELS.items():
        _save_model(checkpoints, name, loops)
    write_index(checkpoints, default="camvid_r2")
    records = base / "records"
    expected_runs = {}
    for index, name in enumerate(MODELS):
        for seed in SEEDS[name]:
            best = 0.5 + 0.01 * index + 0.03 * seed
            expected_runs[(name, seed)] = _write_run(
                records / f"{name}_s{seed}", seed, best, *_attention_record(name, seed)
            )
    # The paper recipe's R = 2 (a comparison record, not a bundled model), and the earlier set in its subfolder,
    # with a run folder of its own that must not count as a seed of today's models.
    expected_runs[("camvid_r2_paper", 0)] = _write_run(records / "camvid_r2_paper_s0", 0, 0.45, 0.98, 0.011)
    # The same R = 2 config trained under bfloat16 autocast: a comparison record, its precision in its config.
    expected_runs[("camvid_r2_bf16", 0)] = _write_run(records / "camvid_r2_bf16_s0", 0, 0.53, 3.1, 0.9)
    (records / "camvid_r2_bf16_s0" / "config.yaml").write_text("train:\n  amp: bfloat16\n")
    (records / "scratch_resnet18").mkdir()
    (records / "scratch_resnet18" / "summary.json").write_text(json.dumps(SCRATCH))
    _write_run(records / "scratch_resnet18" / "camvid_r2_s0", 0, 0.99)
    return {"root": root, "checkpoints": checkpoints, "records": records, "runs": expected_runs, "base": base}


@pytest.fixture(scope="module")
def made(setup):
    """The report run once on the synthetic set (small cost inputs)."""
    out, summary_path = setup["base"] / "RESULTS.md", setup["base"] / "summary.json"
    readme = setup["base"] / "README.md"
    readme.write_text(f"# top\n\n{report_markdown.README_START}\nstale\n{report_markdown.README_END}\n\nLicence note\n")
    original = report_constants.COST_INPUTS
    report_constants.COST_INPUTS = SMALL_INPUTS
    try:
        argv = [
            "--checkpoints", str(setup["checkpoints"]), "--records", str(setup["records"]),
            "--data-root", str(setup["root"]), "--out", str(out), "--summary", str(summary_path), "--no-progress",
            "--readme", str(readme), "--campaign", str(setup["base"] / "no_campaign"),  # not the repository's
            "--queue-folder", str(setup["base"] / "no_queue"),
        ]  # fmt: skip
        assert report_cli.main(argv) == 0
    finally:
        report_constants.COST_INPUTS = original
    return json.loads(summary_path.read_text()), out.read_text(), readme.read_text()


def _evaluate(setup, name: str, loops: int | None) -> dict:
    """mIoU etc. of one checkpoint by `training.evaluate` itself: the independent recomputation."""
    argv = [
        str(setup["checkpoints"] / name),
        "--data-root",
        str(setup["root"]),
        "--num-workers",
        "0",
        "--mode",
        "whole",
    ]
    if loops is not None:
        argv += ["--recurrence", str(loops)]
    return evaluate.evaluate_checkpoint(evaluate.parse_args(argv))


MODEL_KEYS = {"name", "trained_recurrence", "ccl", "seed", "mIoU", "per_class_iou", "mIoU_at_recurrence", "params",
              "gamma", "lift", "lift_per_class", "lift_at_recurrence", "lift_cells", "atlas", "weights_dtype",
              "float32_val_mIoU", "train_seconds", "images_per_s", "train_device", "val_mIoU_seeds", "recipe",
              "trained"}  # fmt: skip


def test_schema_keys_and_types(made):
    summary = made[0]
    assert set(summary) == {"dataset", "split", "default", "generated", "generated_by", "classes", "models", "seeds",
                            "costs", "paper_table2", "recipe_comparison", "mixed_precision", "earlier_sets",
                            "lift_sampling", "goals", "family"}  # fmt: skip
    assert set(summary["family"]) == {"members", "missing", "seed_std", "seed_dof", "noise_stds", "r2_minus_r0",
                                      "paper_r2_minus_r0", "steps", "recipes", "blind_lift", "unused_lift", "curves"}
    assert (summary["dataset"], summary["split"], summary["generated_by"]) == (
        "camvid",
        "val",
        "python -m training.report",
    )
    datetime.fromisoformat(summary["generated"])
    assert summary["classes"] == list(CAMVID.names)
    for model in summary["models"]:
        assert set(model) == MODEL_KEYS
        assert isinstance(model["params"], int) and isinstance(model["ccl"], bool)
        assert 0 <= model["mIoU"] <= 1 and set(model["per_class_iou"]) <= set(CAMVID.names)
        assert all(v is None or 0 <= v <= 1 for v in model["per_class_iou"].values())
        assert model["weights_dtype"] == "float16" and model["float32_val_mIoU"] == FLOAT32_MIOU
        assert set(model["val_mIoU_seeds"]) == {"n", "mean", "std", "sem"}
    for cost in summary["costs"]:
        assert set(cost) == {"input", "feature", "recurrence", "channels", "gflops_increment", "memory_mb_increment"}
        assert isinstance(cost["channels"], int) and isinstance(cost["gflops_increment"], float)
    for row in summary["paper_table2"]:
        assert set(row) == {"setting", "recurrence", "mIoU", "gflops_increment", "memory_mb_increment"}
    assert [(s["name"], s["seed"]) for s in summary["seeds"]] == [(n, s) for n in MODELS for s in SEEDS[n]]
    for seed in summary["seeds"]:
        assert set(seed) == {"name", "seed", "best_val_mIoU", "lift", "gamma", "iterations"}
    assert summary["lift_sampling"] == {"cells_per_image": 16, "seed": 0, "blind": 1.0}
    assert [g["goal"] for g in summary["goals"]] == ["default_val_mIoU", "default_every_class", "default_gamma",
                                                     "default_lift", "family_members", "head_seeds", "head_r2_above_r0",
                                                     "video_t5_above_t1"]  # fmt: skip


def test_miou_equals_training_evaluate(made, setup):
    summary = made[0]
    by_name = {m["name"]: m for m in summary["models"]}
    assert sorted(by_name) == sorted(MODELS)
    for name, loops in MODELS.items():
        model = by_name[name]
        own = _evaluate(setup, name, None)
        assert model["trained_recurrence"] == loops == own["trained_recurrence"]
        assert model["mIoU"] == pytest.approx(own["mIoU"], abs=1e-12)
        assert model["per_class_iou"] == pytest.approx(own["per_class_iou"], abs=1e-12)
        for r, value in model["mIoU_at_recurrence"].items():
            assert value == pytest.approx(_evaluate(setup, name, int(r))["mIoU"], abs=1e-12)


def test_baseline_has_no_loop_counts_and_attention_models_have_three(made):
    summary = made[0]
    by_name = {m["name"]: m for m in summary["models"]}
    assert by_name["camvid_r0"]["mIoU_at_recurrence"] == {}
    assert set(by_name["camvid_r2"]["mIoU_at_recurrence"]) == {"1", "2", "3"}
    assert by_name["camvid_r2"]["mIoU_at_recurrence"]["2"] == by_name["camvid_r2"]["mIoU"]


def test_lift_and_gamma_equal_attention_quality(made, setup):
    """The lift measured in the evaluation pass is `training.attention_quality`'s, cell for cell."""
    by_name = {m["name"]: m for m in made[0]["models"]}
    spec = find_dataset("camvid", setup["root"], "val")
    for name in ("camvid_r1", "camvid_r2"):
        model = by_name[name]
        network, metadata = load_checkpoint(setup["checkpoints"] / name, device="cpu")
        dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
        expected = attention_lift(network.float(), dataset, torch.device("cpu"), [1, 2, 3])
        assert set(model["lift_at_recurrence"]) == {"1", "2", "3"}
        for r, result in expected.items():
            value = model["lift_at_recurrence"][str(r)]
            assert isinstance(value, float) and math.isfinite(value)
            assert value == pytest.approx(result["lift"], rel=1e-9)
        trained = expected[MODELS[name]]
        assert model["lift"] == pytest.approx(trained["lift"], rel=1e-9)
        assert model["lift_per_class"] == pytest.approx(trained["per_class"], rel=1e-9)
        assert model["lift_cells"] == trained["cells"] > 0
        assert model["gamma"] == 1.0  # filled in the fixture, read back from the float16 weights
    baseline = by_name["camvid_r0"]
    assert (baseline["gamma"], baseline["lift"], baseline["lift_per_class"], baseline["lift_at_recurrence"]) == (
        None, None, {}, {},
    )  # fmt: skip


@torch.no_grad()
def _image_matrices(checkpoint: Path, root: Path) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per val image, {R: ((K, K) class matrix after R loops, (K,) known cells per class)}, from the library."""
    network, metadata = load_checkpoint(checkpoint, device="cpu")
    network = network.float()
    dataset = SegmentationDataset(find_dataset("camvid", root, "val"), EvalTransform(metadata["mean"], metadata["std"]))
    per_image = []
    for image, label in dataset:
        images = image.unsqueeze(0)  # (1, 3, H, W)
        features = network.encode(images)
        matrices = {}
        for loops in (1, 2, 3):
            maps = [a[0] for a in network.decode(features, images.shape[-2:], loops, return_attention=True).attentions]
            cells = cell_centre_labels(label.numpy(), maps[0].shape[:2])  # (h, w)
            matrix = class_attention_matrix(maps, torch.from_numpy(cells), 11, IGNORE_INDEX)[-1].numpy()  # (K, K)
            matrices[loops] = (matrix, np.array([(cells == c).sum() for c in range(11)], dtype=float))
        per_image.append(matrices)
    return per_image


def _as_array(matrix: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in matrix])


def test_atlas_rows_sum_to_one_and_the_baseline_has_none(made):
    by_name = {m["name"]: m for m in made[0]["models"]}
    assert by_name["camvid_r0"]["atlas"] == {}
    for name in ("camvid_r1", "camvid_r2"):
        atlas = by_name[name]["atlas"]
        assert set(atlas) == {"1", "2", "3"}
        for entry in atlas.values():
            shares, lift = _as_array(entry["shares"]), _as_array(entry["lift"])
            assert shares.shape == lift.shape == (11, 11)
            present = ~np.isnan(shares).all(axis=1)  # (K,) classes with cells in the split
            assert present.any() and not np.isnan(shares[present]).any()
            np.testing.assert_allclose(shares[present].sum(axis=1), 1.0, rtol=1e-9)
            # The lift is the share over class j's share of the split: one factor per column (a share can be 0 at
            # R = 1, where a cross may hold no class-j cell; the diagonal never is, so each column has a factor).
            shares, lift = shares[present][:, present], lift[present][:, present]  # (k, k)
            with np.errstate(invalid="ignore"):
                split = np.nanmean(shares / lift, axis=0)  # (k,)
            np.testing.assert_allclose(lift * split[None, :], shares, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(split.sum(), 1.0, rtol=1e-9)


def test_atlas_is_the_cell_weighted_mean_of_the_library_matrices(made, setup):
    """Over the fixture's 3 frames: row i averages each frame's row i weighted by its class-i cells."""
    atlas = next(m for m in made[0]["models"] if m["name"] == "camvid_r2")["atlas"]
    per_image = _image_matrices(setup["checkpoints"] / "camvid_r2", setup["root"])
    for loops in (1, 2, 3):
        counts = np.stack([image[loops][1] for image in per_image])  # (N, K)
        expected = np.full((11, 11), np.nan)
        for i in np.flatnonzero(counts.sum(axis=0)):
            rows = [(image[loops][0][i], image[loops][1][i]) for image in per_image if image[loops][1][i] > 0]
            expected[i] = np.average([row for row, _ in rows], axis=0, weights=[count for _, count in rows])
        np.testing.assert_allclose(_as_array(atlas[str(loops)]["shares"]), expected, rtol=1e-9, equal_nan=True)
        share_of_split = counts.sum(axis=0) / counts.sum()  # (K,)
        with np.errstate(invalid="ignore", divide="ignore"):
            lift = expected / share_of_split[None, :]
        np.testing.assert_allclose(_as_array(atlas[str(loops)]["lift"]), lift, rtol=1e-9, equal_nan=True)


def test_atlas_of_one_frame_is_that_frames_matrix(setup, tmp_path):
    root = write_camvid(tmp_path / "camvid", {"val": 1}, size=(40, 56), seed=5)
    entry = report_measure.evaluate_model({"name": "camvid_r1"}, setup["checkpoints"], root, "val", "cpu", lambda: None)
    (image,) = _image_matrices(setup["checkpoints"] / "camvid_r1", root)
    for loops in (1, 2, 3):
        matrix, counts = image[loops]
        present = counts > 0
        assert 1 < present.sum() < 11  # a case with absent classes: their rows are null
        shares = _as_array(entry["atlas"][str(loops)]["shares"])
        np.testing.assert_allclose(shares[present], matrix[present], rtol=1e-9)
        assert np.isnan(shares[~present]).all()
        lift = _as_array(entry["atlas"][str(loops)]["lift"])
        share_of_frame = counts[present] / counts.sum()  # (k,)
        np.testing.assert_allclose(lift[present][:, present], matrix[present][:, present] / share_of_frame, rtol=1e-9)


def test_reused_evaluations_without_the_atlas_are_refused(setup, tmp_path, capsys):
    old = {"models": [{"name": "camvid_r2", "lift_at_recurrence": {"1": 1.0}}]}  # written before the atlas
    (tmp_path / "evaluations.json").write_text(json.dumps(old))
    argv = ["--checkpoints", str(setup["checkpoints"]), "--records", str(setup["records"]), "--no-progress",
            "--data-root", str(setup["root"]), "--reuse", str(tmp_path / "evaluations.json"),
            "--out", str(tmp_path / "r.md"), "--summary", str(tmp_path / "s.json")]  # fmt: skip
    assert report_cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "without the attention atlas" in error and "delete it to evaluate again" in error
    assert not (tmp_path / "s.json").exists()


def test_markdown_lists_the_atlas_diagonal_of_the_r2_model(made):
    summary, markdown, _ = made
    atlas = next(m for m in summary["models"] if m["name"] == "camvid_r2")["atlas"]["2"]
    own = [report_common.pct(atlas["shares"][i][i]) for i in range(11)]
    assert "| share of influence on its own class (%) | " + " | ".join(own) + " |" in markdown
    assert "drawn by the app's Attention atlas page" in markdown


def test_params_and_records_read_back(made, setup):
    summary = made[0]
    for model in summary["models"]:
        built = CCNet(num_classes=11, recurrence=MODELS[model["name"]], **TINY)
        assert model["params"] == sum(p.numel() for p in built.parameters())
        run = setup["runs"][(model["name"], 0)]
        assert model["train_seconds"] == pytest.approx(run["seconds"])
        assert model["images_per_s"] == pytest.approx(run["rate"])
        assert model["train_device"] == "cuda:0" and model["seed"] == 0
    for seed in summary["seeds"]:
        run = setup["runs"][(seed["name"], seed["seed"])]
        assert seed["best_val_mIoU"] == pytest.approx(run["best"])
        assert (seed["lift"], seed["gamma"], seed["iterations"]) == (run["lift"], run["gamma"], 50)  # last val record


def test_seed_statistics_for_two_seeds_and_for_one(made, setup):
    summary, markdown, readme = made
    by_name = {m["name"]: m for m in summary["models"]}
    two = [setup["runs"][("camvid_r2", s)]["best"] for s in (0, 1)]
    stats = by_name["camvid_r2"]["val_mIoU_seeds"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx((two[0] + two[1]) / 2)
    assert stats["std"] == pytest.approx(abs(two[1] - two[0]) / math.sqrt(2))  # sample sd of two values
    assert stats["sem"] == pytest.approx(stats["std"] / math.sqrt(2))
    one = by_name["camvid_r1"]["val_mIoU_seeds"]
    assert one == {"n": 1, "mean": pytest.approx(setup["runs"][("camvid_r1", 0)]["best"]), "std": None, "sem": None}
    assert report_common.seed_stats([]) == {"n": 0, "mean": None, "std": None, "sem": None}
    three = report_common.seed_stats([0.60, 0.62, 0.67])
    assert three["std"] == pytest.approx(statistics.stdev([0.60, 0.62, 0.67]))
    assert three["sem"] == pytest.approx(three["std"] / math.sqrt(3))
    # n = 1 is said, not hidden: in the seeds table and the README block.
    assert f"| RCCA R = 1, end to end | {100 * one['mean']:.1f} (n = 1) |" in readme
    assert f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f} (n = 2)" in readme
    assert f"| {100 * stats['mean']:.1f} ± {100 * stats['std']:.1f} | {100 * stats['sem']:.1f} | 2 |" in markdown
    assert "– (n = 1)" in markdown


def test_recipe_comparison_table_from_the_paper_record(made, setup):
    summary, markdown, _ = made
    rows = summary["recipe_comparison"]
    assert [(r["recipe"], r["model"], r["seed"]) for r in rows] == [
        ("paper", "camvid_r2", 0), ("bundled", "camvid_r2", 0), ("bundled", "camvid_r2", 1),
    ]  # fmt: skip
    assert (rows[0]["best_val_mIoU"], rows[0]["gamma"], rows[0]["lift"]) == (0.45, 0.011, 0.98)
    assert "camvid_r2_paper" not in {s["name"] for s in summary["seeds"]}  # a comparison, not a seed
    assert "## Recipe: the paper's against the bundled one (R = 2, equal iterations)" in markdown
    assert "| paper (gamma from 0, no affinity loss) | camvid_r2 | 0 | 50 | 45.0 | 0.011 | 0.98 |" in markdown
    assert "the same number of iterations" in markdown
    assert report_markdown.recipe_table({"recipe_comparison": []}) == []  # no paper record: no section


def test_bfloat16_record_is_judged_against_the_float32_seed_spread(made, setup):
    summary, markdown, _ = made
    assert "camvid_r2_bf16" not in {s["name"] for s in summary["seeds"]}  # a comparison, not a seed
    (comparison,) = summary["mixed_precision"]
    float32 = [setup["runs"][("camvid_r2", s)]["best"] for s in (0, 1)]
    assert comparison["model"] == "camvid_r2"
    assert [s["amp"] for s in comparison["float32"]["seeds"]] == ["float32", "float32"]  # cuda, amp unset
    assert comparison["bfloat16"]["seeds"][0]["amp"] == "bfloat16"  # read from the record's config.yaml
    assert comparison["float32"]["std"] == pytest.approx(statistics.stdev(float32))
    assert comparison["difference"] == pytest.approx(0.53 - statistics.fmean(float32))
    expected = abs(0.53 - statistics.fmean(float32)) <= report_constants.NOISE_STDS * statistics.stdev(float32)
    assert comparison["within_seed_noise"] is expected
    rate = setup["runs"][("camvid_r2_bf16", 0)]["rate"]
    reference = statistics.median(setup["runs"][("camvid_r2", s)]["rate"] for s in (0, 1))
    assert comparison["images_per_s_ratio"] == pytest.approx(rate / reference)
    assert "## Training in bfloat16 against float32 (same config and schedule)" in markdown
    assert f"| camvid_r2 | bfloat16 | 0 | 50 | 53.0 | 3.10 | 0.900 | {rate:.2f} |" in markdown
    assert report_markdown.mixed_precision_table({"mixed_precision": []}) == []  # no bfloat16 record: no section


def test_precision_verdict_with_one_float32_seed_says_it_cannot_judge():
    def record(name, best, amp="float32"):
        return report_records.RunRecord(name, 0, best, 10.0, 2.0, "cpu", iterations=250, amp=amp)

    (comparison,) = report_summary.precision_comparison(
        [{"name": "camvid_r2"}], [record("camvid_r2", 0.44)], [record("camvid_r2_bf16", 0.45, "bfloat16")]
    )
    assert comparison["within_seed_noise"] is None and comparison["float32"]["std"] is None
    assert "no seed spread to judge noise by" in report_markdown._precision_verdict(comparison)
    far = report_summary.precision_comparison(
        [{"name": "camvid_r2"}], [record("camvid_r2", 0.44), record("camvid_r2", 0.46)],
        [record("camvid_r2_bf16", 0.60, "bfloat16")],
    )[0]  # fmt: skip
    assert far["within_seed_noise"] is False and "NOT within seed noise" in report_markdown._precision_verdict(far)


@pytest.mark.parametrize(
    ("config", "device", "expected"),
    [("train:\n  amp: bfloat16\n", "cpu", "bfloat16"), ("train:\n  amp: true\n", "cpu", "float32"),
     ("train:\n  amp: true\n", "cuda:0", "float16"), ("train:\n  amp: false\n", "cuda:0", "float32"),
     (None, "cpu", "float32")],
)  # fmt: skip
def test_a_runs_precision_comes_from_its_config(tmp_path, config, device, expected):
    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
    assert report_records._amp_of(tmp_path, device) == expected


def test_earlier_sets_columns_and_their_absence(made, setup, tmp_path):
    summary, markdown, _ = made
    (scratch,) = summary["earlier_sets"]  # the fixture has the from-scratch set only
    assert scratch["folder"] == "scratch_resnet18" and scratch["models"] == [
        {k: m[k] for k in ("name", "trained_recurrence", "ccl", "mIoU")} for m in SCRATCH["models"]
    ]
    assert "| from scratch (ResNet-18) |" in markdown and "| 58.2 |" in markdown  # R = 2: 58.2
    assert all(s["best_val_mIoU"] < 0.9 for s in summary["seeds"])  # its run folders are not today's seeds
    assert report_records.read_earlier_set(tmp_path / "absent.json") is None
    without = {**summary, "earlier_sets": []}
    assert "from scratch" not in "\n".join(report_markdown.seeds_table(without))
    assert "No earlier set" in report_markdown.earlier_sets_note(without)[0]
    (tmp_path / "short_schedule").mkdir()
    (tmp_path / "short_schedule" / "summary.json").write_text(json.dumps(SCRATCH))
    (tmp_path / "scratch_resnet18").mkdir()
    (tmp_path / "scratch_resnet18" / "summary.json").write_text("[not a summary")
    with pytest.raises(report_records.ReportError, match="not a report summary"):
        report_records.read_earlier_sets(tmp_path)
    (tmp_path / "scratch_resnet18" / "summary.json").unlink()
    assert [g["heading"] for g in report_records.read_earlier_sets(tmp_path)] == ["250-iteration set"]


def test_float16_against_the_checkpoints_own_float32_val(made):
    summary, markdown, _ = made
    worst = max(abs(100 * (m["mIoU"] - FLOAT32_MIOU)) for m in summary["models"])
    for model in summary["models"]:
        assert (
            f"| float16 | 50.00 | {100 * model['mIoU']:.2f} | {100 * (model['mIoU'] - FLOAT32_MIOU):+.3f} |" in markdown
        )
    assert f"Largest |float16 - float32| difference of the end-to-end models: {worst:.3f} points" in markdown
    assert "device_eval" not in markdown  # the old GPU evaluations are not needed


def test_network_note_for_a_pretrained_mobilenet():
    config = CCNet(num_classes=11, backbone="mobilenet_v2", recurrence=2, head_channels=16).config
    note = report_markdown.network_note(config, RECIPE | {"model": {"pretrained": "p.safetensors", "gamma_init": 1.0}})
    assert note.startswith("network `mobilenet_v2`, output stride 8, 16-channel head, trained from an ImageNet")
    assert "base width" not in note and "gamma starting at 1" in note
    scratch = report_markdown.network_note(TINY, {})
    assert "from scratch" in scratch and "at base width 8" in scratch
    assert "attention affinity loss x 0.4" in report_markdown.recipe_note(RECIPE)


def test_flops_grow_with_r_and_match_the_analytic_count(made):
    summary = made[0]
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_costs

    for size in SMALL_INPUTS:
        costs = sorted((c for c in summary["costs"] if c["input"] == list(size)), key=lambda c: c["recurrence"])
        assert [c["recurrence"] for c in costs] == [1, 2, 3]
        flops = [c["gflops_increment"] for c in costs]
        assert flops[0] > 0 and flops[0] < flops[1] < flops[2]
        h, w = costs[0]["feature"]
        assert costs[0]["channels"] == TINY["head_channels"]
        for cost in costs:
            analytic = bench_costs.analytic_flops(f"RCCA R={cost['recurrence']}", h, w, cost["channels"]) / 1e9
            assert cost["gflops_increment"] == pytest.approx(analytic, rel=1e-9)
        assert all(isinstance(c["memory_mb_increment"], float) for c in costs)  # tiny: noise around 0
    assert [c["feature"] for c in summary["costs"] if c["recurrence"] == 1] == [[6, 8], [13, 13]]


def test_paper_numbers_come_from_the_one_constant(made):
    summary, markdown, _ = made
    assert summary["paper_table2"] == [dict(row) for row in report_constants.PAPER_TABLE2]
    r2 = next(r for r in summary["paper_table2"] if r["setting"] == "+ RCCA R=2 (arXiv)")
    assert (r2["mIoU"], r2["gflops_increment"], r2["memory_mb_increment"]) == (0.798, 16.5, 127.0)
    assert "| 79.8 | 16.5 | 127 |" in markdown


def test_markdown_is_marked_generated_and_carries_the_numbers(made):
    summary, markdown, _ = made
    assert markdown.startswith("# Results") and "Generated file, do not edit" in markdown
    assert "python -m training.report" in markdown
    r2 = next(m for m in summary["models"] if m["name"] == "camvid_r2")
    assert f"{100 * r2['mIoU']:.1f}" in markdown
    assert "val mIoU >= 68: not met.**" in markdown  # tiny random models are far below
    assert "| RCCA R = 2, end to end | 1.000 |" in markdown  # the learned gamma column, read from the weights
    lift = r2["lift_at_recurrence"]["1"]
    assert f"| RCCA R = 2, end to end | 1.000 | {lift:.2f} |" in markdown  # gamma, then lift per R
    assert "trained from an ImageNet-pretrained backbone, attention scale gamma starting at 1" in markdown
    assert "| 4.00 / 5.00 | 0.800 / 0.900 |" in markdown  # the R = 2 seeds' last validations
    for heading in (
        "Per-class IoU",
        "Every model at R = 1, 2, 3",
        "Does the attention follow the classes?",
        "Lift per class",
        "Attention atlas",
        "Costs of the attention module",
        "Seeds",
        "Float16 export against float32",
        "Reproduce",
    ):
        assert heading in markdown


def test_missing_checkpoint_folder_is_a_clear_error(setup, tmp_path, capsys):
    argv = ["--checkpoints", str(tmp_path / "nowhere"), "--data-root", str(setup["root"]), "--no-progress"]
    code = report_cli.main(argv)
    assert code == 2
    error = capsys.readouterr().err
    assert "checkpoint folder" in error and "nowhere" in error and "--checkpoints" in error


def test_missing_data_root_is_a_clear_error(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CAMVID_ROOT", raising=False)
    argv = ["--checkpoints", str(setup["checkpoints"]), "--records", str(setup["records"]), "--no-progress",
            "--out", str(tmp_path / "r.md"), "--summary", str(tmp_path / "s.json")]  # fmt: skip
    assert report_cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "--data-root" in error and "CAMVID_ROOT" in error
    assert not (tmp_path / "s.json").exists()


def test_figures_draw_influence_maps_and_the_chart(made, setup, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib comes with requirements-dev.txt")
    from training import figures

    out = tmp_path / "figures"
    argv = ["--checkpoints", str(setup["checkpoints"]), "--data-root", str(setup["root"]), "--frames", "2",
            "--summary", str(setup["base"] / "summary.json"), "--out", str(out), "--no-progress"]  # fmt: skip
    assert figures.main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["influence_frame_000.png", "influence_frame_002.png", "miou_vs_r.png"]
    assert all((out / n).stat().st_size > 1000 for n in names)


@pytest.mark.skipif(not os.environ.get("CAMVID_ROOT"), reason="CAMVID_ROOT is not set (the real CamVid dataset)")
def test_committed_summary_matches_the_bundled_checkpoints():
    if not SUMMARY.is_file():
        pytest.skip("results/camvid/summary.json not generated yet")
    summary = json.loads(SUMMARY.read_text())
    index = read_index(REPO / "checkpoints")
    # The campaign's interim checkpoint is deliberately not in the summary (training.campaign.interim).
    # Video models are reported from their head records only.
    bundled = {
        m["name"]: m["recurrence"] for m in index["models"] if m["name"] != campaign.INTERIM and not m.get("frames")
    }
    assert {m["name"]: m["trained_recurrence"] for m in summary["models"]} == bundled
    for model in summary["models"]:
        sidecar = next(m for m in index["models"] if m["name"] == model["name"])
        # The report's evaluation of the bundled (float16) file against training's float32 value in the sidecar
        # (a head's: on the cached float16 features, so it also holds their rounding).
        bound = HEAD_FEATURE_BOUND if model.get("head_kind") else report_constants.FLOAT16_BOUND
        assert model["mIoU"] == pytest.approx(sidecar["mIoU"], abs=bound)
        assert (model["mIoU_at_recurrence"] == {}) == (model["trained_recurrence"] == 0)
        assert (model["lift"] is None) == (model["trained_recurrence"] == 0)
        assert (model["lift_at_recurrence"] == {}) == (model["trained_recurrence"] == 0)
        assert (model["atlas"] == {}) == (model["trained_recurrence"] == 0)
        assert model["val_mIoU_seeds"]["n"] >= 1
    seeds = {(s["name"], s["seed"]) for s in summary["seeds"]}
    assert {(n, 0) for n in bundled} <= seeds and {n for n, _ in seeds} == set(bundled)  # seed 0 is the bundled one
    for size in ([360, 480], [769, 769]):  # at full size every loop's saved tensors show in the peak
        costs = sorted((c for c in summary["costs"] if c["input"] == size), key=lambda c: c["recurrence"])
        assert [c["recurrence"] for c in costs] == [1, 2, 3]
        assert 0 < costs[0]["gflops_increment"] < costs[1]["gflops_increment"] < costs[2]["gflops_increment"]
        assert 0 < costs[0]["memory_mb_increment"] < costs[1]["memory_mb_increment"] < costs[2]["memory_mb_increment"]
    # The README's table and docs/RESULTS.md come from the same run as the summary.
    assert report_markdown.readme_block(summary) in (REPO / "README.md").read_text()
    assert summary["generated"] in (REPO / "docs" / "RESULTS.md").read_text()


def test_readme_block_is_rewritten_between_its_markers(made):
    summary, _, readme = made
    assert readme.startswith("# top\n") and readme.endswith("Licence note\n") and "stale" not in readme
    block = readme[readme.index(report_markdown.README_START) : readme.index(report_markdown.README_END)]
    r2 = next(m for m in summary["models"] if m["name"] == "camvid_r2")
    stats = r2["val_mIoU_seeds"]
    assert (
        f"| RCCA R = 2, end to end | {100 * stats['mean']:.1f} ± {100 * stats['std']:.1f} (n = 2) | "
        f"{100 * r2['mIoU']:.1f} |"
        in block
    )
    assert f"| {r2['lift']:.2f} |" in block and "| 79.8 |" in block
    assert "| baseline (R = 0), end to end |" in block and "n/a" in block and "(n = 1)" in block


def _hand_summary(miou: float, classes: dict, gamma, lift, heads=()) -> dict:
    """The default R = 2 model (and an R = 0 model) with the given numbers; head records as (kind, [mIoU])."""
    models = [
        {"name": "camvid_r0", "trained_recurrence": 0, "ccl": False, "mIoU": 0.5, "per_class_iou": {}, "params": 1},
        {"name": "camvid_r2", "trained_recurrence": 2, "ccl": False, "mIoU": miou, "per_class_iou": classes,
         "gamma": gamma, "lift": lift, "params": 4_000_000},
    ]  # fmt: skip
    records = [{"kind": kind, "seed": seed, "mIoU": v} for kind, values in heads for seed, v in enumerate(values)]
    summary = {"models": models, "seeds": [], "default": "camvid_r2"}
    if records:
        summary["heads"] = report_summary.head_summary(records)
        summary["head_ordering"] = report_goals.head_ordering(summary["heads"])
    return summary


FIVE = (0.60, 0.61, 0.62, 0.61, 0.60)


def test_goals_are_judged_from_the_numbers():
    heads = [(kind, FIVE) for kind in report_goals.HEAD_KINDS if kind not in ("r2", "video_t5")]
    heads += [("r2", tuple(v + 0.05 for v in FIVE)), ("video_t5", tuple(v + 0.01 for v in FIVE))]
    hand = _hand_summary(0.712, {"Sky": 0.9, "Pole": 0.214}, 0.84, 13.4, heads)
    met = report_markdown.goals_paragraph(hand)
    text = "\n".join(met)
    assert met[0] == "## The issues' goals: met"
    assert "val mIoU >= 68: met.** 71.2 (+3.2 points from the goal" in text
    assert "No class under 20% IoU: met.** Lowest: Pole 21.4." in text
    assert "γ >= 0.3 (attention used): met.** γ = 0.840." in text and "at R = 2: met.** 13.40" in text
    assert "5 seeds per kind: met.** Seeds recorded: r0 5, r1 5, r2 5" in text
    assert "outside the 95% intervals: met.** Its interval lies wholly above (+5.0 points" in text
    assert "T = 5 above T = 1 in the mean over seeds: met.** +1.0 points (n = 5 and 5" in text


def test_goals_missed_say_by_how_much():
    heads = [("r0", FIVE), ("r2", (0.61, 0.60, 0.62, 0.60, 0.63)), ("video_t5", (0.6, 0.6)), ("video_t1", (0.61, 0.6))]
    summary = _hand_summary(0.653, {"Sky": 0.9, "Pole": 0.184, "SignSymbol": 0.19}, 0.1, 2.5, heads)
    missed = report_markdown.goals_paragraph(summary)
    text = "\n".join(missed)
    assert missed[0] == "## The issues' goals: not met"
    assert "val mIoU >= 68: not met.** 65.3 (-2.7 points from the goal" in text
    assert "Lowest: Pole 18.4; under the goal: Pole 18.4, SignSymbol 19.0 (why a class misses" in text
    assert "γ >= 0.3 (attention used): not met.**" in text and "at R = 2: not met.** 2.50" in text
    assert "Seeds recorded: r0 5, r1 0, r2 5, r3 0" in text and "video_t5 2, video_t1 2" in text
    assert "not met.** The intervals overlap: the seeds cannot tell them apart (+0.4" in text
    assert "T = 1 in the mean over seeds: not met.** -0.5 points (n = 2 and 2" in text
    goals = {g["goal"]: g for g in report_goals.judge_goals(summary)}
    assert goals["default_val_mIoU"]["margin"] == pytest.approx(-0.027)
    assert goals["default_every_class"]["below"] == {"Pole": 0.184, "SignSymbol": 0.19}


def test_goals_not_measured_say_so():
    lines = report_markdown.goals_paragraph(_hand_summary(0.70, {"Sky": 0.9}, None, None))
    text = "\n".join(lines)
    assert lines[0] == "## The issues' goals: not all measured"
    assert "γ = –" in text and "at R = 2: not measured.** –" in text
    assert "5 seeds per kind: not measured.**" in text and "R = 0 head, outside the 95% intervals: not measured" in text
    assert "T = 1 in the mean over seeds: not measured** (no video head records)" in text
    no_r2 = {"models": [{"name": "camvid_r0", "trained_recurrence": 0, "ccl": False, "mIoU": 0.5, "params": 1}],
             "seeds": []}  # fmt: skip
    assert "The default model's goals: not measured.** no R = 2 model is bundled." in "\n".join(
        report_markdown.goals_paragraph(no_r2)
    )


def test_a_paper_run_stopped_early_is_compared_at_its_last_step():
    def record(name, steps):
        return report_records.RunRecord(name, 0, max(v["mIoU"] for v in steps.values()), 1.0, 1.0, "cpu",
                                iterations=max(steps), val_steps=steps)  # fmt: skip

    paper = record("camvid_r2_paper", {125: {"mIoU": 0.40, "lift": 1.0, "gamma": 0.01}})
    bundled = record("camvid_r2", {125: {"mIoU": 0.43, "lift": None, "gamma": 0.97},
                                   250: {"mIoU": 0.45, "lift": 3.5, "gamma": 0.96}})  # fmt: skip
    rows = report_summary.recipe_rows([{"name": "camvid_r2"}], [bundled], [paper])
    assert [(r["recipe"], r["iterations"], r["best_val_mIoU"], r["gamma"]) for r in rows] == [
        ("paper", 125, 0.40, 0.01), ("bundled", 125, 0.43, 0.97)
    ]  # fmt: skip


def _save_bundled(folder: Path, name: str, loops: int, training: dict) -> None:
    """A bundled checkpoint whose card (`training`) says how it was made: the campaign's run or a head."""
    _save_model(folder, name, loops)
    from ccnet.checkpoint import update_sidecar

    update_sidecar(folder / name, {"training": training})


QUEUE = {"base": "base.yaml", "runs": [
    {"name": "camvid_e2e_r0", "set": {"model.recurrence": 0}},
    {"name": "camvid_e2e_r1", "set": {"model.recurrence": 1}},
    {"name": "camvid_e2e_r0_s1", "set": {"model.recurrence": 0, "seed": 1}, "seed_of": "camvid_e2e_r0"},
    {"name": "camvid_e2e_r2_s1", "set": {"seed": 1}, "seed_of": "camvid_r2"},
    {"name": "camvid_e2e_r3", "set": {"model.recurrence": 3}},  # not started: no folder
]}  # fmt: skip
# queue run -> (seed, R, finished, its validations: (step, mIoU))
QUEUE_RUNS = {
    "camvid_e2e_r0": (0, 0, True, ((10, 0.45), (20, 0.50))),
    "camvid_e2e_r1": (0, 1, False, ((10, 0.47),)),  # in progress at step 10 of 20
    "camvid_e2e_r0_s1": (1, 0, True, ((10, 0.46), (20, 0.52))),
    "camvid_e2e_r2_s1": (1, 2, True, ((10, 0.50), (20, 0.58))),
}


def _write_queue(base: Path, checkpoints: Path) -> tuple[Path, Path]:
    """The campaign queue's committed folders as training.queue leaves them, and its YAML; the finished
    camvid_e2e_r0 bundled as an end-to-end checkpoint."""
    queue_file, folder = base / "queue.yaml", base / "queue_runs"
    queue_file.write_text(yaml.safe_dump(QUEUE))
    base_config = {"seed": 0, "model": {"gamma_init": 1.0}, "loss": {"attention_weight": 0.4}}  # the default's recipe
    (base / "base.yaml").write_text(yaml.safe_dump(base_config))  # the runs not started take R and recipe from it
    start = datetime.fromisoformat(CREATED).timestamp()
    for name, (seed, loops, finished, validations) in QUEUE_RUNS.items():
        run = folder / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"created": CREATED, "seed": seed, "device": "cpu"}))
        config = {"seed": seed, "model": {"recurrence": loops, "gamma_init": 1.0}, "optim": {"iterations": 20},
                  "loss": {"attention_weight": 0.0 if loops == 0 else 0.4}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        lines = []
        for step, miou in validations:
            lines += [{"step": step, "kind": "train", "images_per_s": 2.0, "time": start + step},
                      {"step": step, "kind": "val", "mIoU": miou, "time": start + step + 1}]  # fmt: skip
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        if finished:
            (run / "finished.json").write_text(json.dumps({"step": 20, "checkpoint": None}))
    _save_bundled(checkpoints, "camvid_e2e_r0", 0, {"run_id": "queue-r0"})
    write_index(checkpoints, default="camvid_r2")
    return queue_file, folder


@pytest.fixture(scope="module")
def campaign_made(setup, tmp_path_factory):
    """The report on a campaign-era set: the default from the campaign's own folder, two heads, old records moved."""
    base = tmp_path_factory.mktemp("campaign_report")
    checkpoints, records, folder = base / "checkpoints", base / "records", base / "campaign"
    checkpoints.mkdir()
    _save_bundled(checkpoints, "camvid_r2", 2, {"run_id": "campaign-1"})
    _save_bundled(checkpoints, "camvid_r0", 0, {"head_only_on": "save-1", "head_kind": "r0"})
    _save_bundled(checkpoints, "camvid_r2_paper", 2, {"head_only_on": "save-1"})  # kind known by its name
    write_index(checkpoints, default="camvid_r2")
    (records / "heads").mkdir(parents=True)
    for kind, values in (("r0", (0.40, 0.41, 0.42)), ("r2", (0.45, 0.46, 0.47)), ("r2_paper", (0.43, 0.44))):
        for seed, value in enumerate(values):
            record = {"kind": kind, "seed": seed, "mIoU": value, "lift": None if kind == "r0" else 2.0,
                      "gamma": None if kind == "r0" else 0.5, "iterations": 300, "seconds": 100.0 + seed,
                      "backbone_save_id": "save-1"}  # fmt: skip
            (records / "heads" / f"{kind}_s{seed}.json").write_text(json.dumps(record))
    stale = {"kind": "r0", "seed": 3, "mIoU": 0.9, "iterations": 300, "backbone_save_id": "save-0"}  # another backbone
    (records / "heads" / "r0_s3.json").write_text(json.dumps(stale))
    _write_run(records / "camvid_r2_s0", 0, 0.30)  # an older run of the same name: the campaign replaces it
    (records / "short_schedule").mkdir()
    (records / "short_schedule" / "summary.json").write_text(json.dumps(SCRATCH))
    folder.mkdir()
    start = datetime.fromisoformat(CREATED).timestamp()
    run = {"run_id": "campaign-1", "created": CREATED, "seed": 0, "device": "cpu", "resumed": [{"device": "cpu"}]}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "config.yaml").write_text("optim:\n  iterations: 20\n")
    lines = [{"step": 10, "kind": "train", "images_per_s": 2.0, "time": start + 100},
             {"step": 10, "kind": "val", "mIoU": 0.55, "lift": 3.0, GAMMA_KEY: 0.9, "time": start + 110,
              "per_class_iou": {"Pole": 0.1}},
             {"step": 20, "kind": "train", "images_per_s": 2.2, "time": start + 5000},  # after a pause
             {"step": 20, "kind": "val", "mIoU": 0.6, "lift": 4.0, GAMMA_KEY: 0.8, "time": start + 5010,
              "per_class_iou": {"Pole": 0.2}}]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    queue_file, queue_folder = _write_queue(base, checkpoints)
    original = report_constants.COST_INPUTS
    report_constants.COST_INPUTS = SMALL_INPUTS
    try:
        argv = ["--checkpoints", str(checkpoints), "--records", str(records), "--campaign", str(folder),
                "--data-root", str(setup["root"]), "--out", str(base / "RESULTS.md"),
                "--summary", str(base / "summary.json"), "--readme", str(base / "none.md"),
                "--queue", str(queue_file), "--queue-folder", str(queue_folder), "--no-progress"]  # fmt: skip
        assert report_cli.main(argv) == 0
    finally:
        report_constants.COST_INPUTS = original
    return json.loads((base / "summary.json").read_text()), (base / "RESULTS.md").read_text(), checkpoints


def test_the_default_is_read_from_the_campaign_and_heads_from_their_records(campaign_made):
    summary, markdown, checkpoints = campaign_made
    models = {m["name"]: m for m in summary["models"]}
    default = models["camvid_r2"]
    assert "head_kind" not in default and default["val_mIoU_seeds"]["n"] == 2  # the campaign and camvid_e2e_r2_s1
    assert default["val_mIoU_seeds"]["mean"] == pytest.approx(0.59)  # the campaign's best val, not the older 0.30
    assert default["train_seconds"] == pytest.approx(110 + 10)  # the pause between sessions left out
    assert (models["camvid_r0"]["head_kind"], models["camvid_r2_paper"]["head_kind"]) == ("r0", "r2_paper")
    assert models["camvid_r0"]["val_mIoU_seeds"]["n"] == 3 and models["camvid_r0"]["train_seconds"] == 100.0
    assert models["camvid_r0"]["val_mIoU_seeds"]["mean"] == pytest.approx(0.41)
    assert [(s["name"], s["seed"]) for s in summary["seeds"] if s.get("head")] == [
        ("camvid_r0", 0), ("camvid_r0", 1), ("camvid_r0", 2), ("camvid_r2_paper", 0), ("camvid_r2_paper", 1)
    ]  # fmt: skip
    assert summary["campaign"]["step"] == 20 and summary["earlier_sets"][0]["heading"] == "250-iteration set"
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["default_val_mIoU"]["model"] == "camvid_r2" and goals["head_seeds"]["met"] is False
    assert goals["head_r2_above_r0"]["verdict"] == "above"  # 45-47 against 40-42 over three seeds each
    assert "| R = 2, the paper's losses (γ from 0, no affinity loss), head |" in markdown
    assert "| baseline (R = 0), head | 40.0 | 41.0 | 42.0 | 41.0 ± 1.0 |" in markdown
    assert "| 250-iteration set |" in markdown and "python -m training.campaign finish" in markdown
    assert "training/configs/camvid_r0.yaml" not in markdown and "python -m training.campaign start" in markdown
    assert "runs resumed across sessions: camvid_r2 (2 sessions)" in markdown
    assert "| 120 | 2.1 | cpu |" in markdown and "| 100 | – | – |" in markdown  # time, images/s, device
    card = json.loads((checkpoints / "camvid_r0.json").read_text())["training"]
    assert card["seeds"]["n"] == 3 and card["seeds"]["mean"] == pytest.approx(0.41)  # the app's model card


def test_the_family_is_table_2_in_kind_judged_against_its_second_seeds(campaign_made):
    summary, markdown, _ = campaign_made
    family = summary["family"]
    members = {(m["recurrence"], m["recipe"]): m for m in family["members"]}
    assert list(members) == [(0, "default"), (2, "default")]  # end to end only: never the heads
    assert members[(0, "default")]["seeds"] == {"0": 0.50, "1": 0.52}  # each run's last validation
    assert members[(2, "default")]["seeds"] == {"0": 0.6, "1": 0.58}  # the campaign and the queue's seed_of run
    assert [(m["recurrence"], m["recipe"], m["run"], m["step"]) for m in family["missing"]] == [
        (1, "default", "camvid_e2e_r1", 10), (3, "default", "camvid_e2e_r3", 0), (2, "paper", None, None)
    ]  # fmt: skip
    assert family["seed_std"] == pytest.approx(math.sqrt((0.01**2 * 2 + 0.01**2 * 2) / 2)) and family["seed_dof"] == 2
    r2_r0 = family["r2_minus_r0"]
    assert r2_r0["difference"] == pytest.approx(0.08) and r2_r0["noise"] == pytest.approx(2 * family["seed_std"])
    assert r2_r0["verdict"] == "above" and family["paper_r2_minus_r0"] == pytest.approx(0.047)
    assert [(c["run"], c["member"], c["seed"], c["finished"], len(c["points"])) for c in family["curves"]] == [
        ("campaign", "camvid_r2", 0, True, 2), ("camvid_e2e_r0", "camvid_e2e_r0", 0, True, 2),
        ("camvid_e2e_r1", "camvid_e2e_r1", 0, False, 1), ("camvid_e2e_r0_s1", "camvid_e2e_r0", 1, True, 2),
        ("camvid_e2e_r2_s1", "camvid_r2", 1, True, 2),
    ]  # fmt: skip
    assert [m["name"] for m in summary["models"]][:2] == ["camvid_e2e_r0", "camvid_r2"]  # the family first
    assert {m["name"]: m["trained"] for m in summary["models"]} == {
        "camvid_e2e_r0": "end to end", "camvid_r2": "end to end", "camvid_r0": "head", "camvid_r2_paper": "head"
    }  # fmt: skip
    assert "## Table 2 in kind: the end-to-end family" in markdown
    assert "| 1 | RCCA R = 1 | not trained yet (queue run `camvid_e2e_r1` at iteration 10) |" in markdown
    assert "| 3 | RCCA R = 3 | not trained yet (queue run `camvid_e2e_r3`, not started) |" in markdown
    assert "| 2 | R = 2, the paper's losses (γ from 0, no affinity loss) | not trained yet (not queued) |" in markdown
    assert "| 0 | baseline (R = 0) (`camvid_e2e_r0`) |" in markdown and "| 50.0 / 52.0 (mean 51.0) |" in markdown
    assert "R = 2 minus R = 0, end to end: +8.0 points (n = 2 and 2, yardstick ± 2.8): beyond the seed spread" in (
        markdown
    )
    assert "| baseline (R = 0), end to end |" in markdown  # every other table says how each model was trained
    assert "the many-seeds study (not end to end)" in markdown
    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["family_members"]["met"] is False and goals["family_members"]["value"] == 2


def test_the_family_without_second_seeds_says_it_cannot_judge(made):
    summary, markdown, _ = made
    family = summary["family"]
    # The fixture's run records give camvid_r0 and camvid_r2 two seeds each: the spread exists there.
    assert family["seed_dof"] == 2 and family["r2_minus_r0"]["verdict"] == "within"
    no_seeds = {**family, "seed_std": None, "r2_minus_r0": {**family["r2_minus_r0"], "noise": None, "verdict": None}}
    from training.report.family_tables import differences_lines, spread_sentence

    assert "not measured yet" in spread_sentence(no_seeds)
    assert "not judged (no seed spread yet)" in differences_lines(no_seeds)[0]


def test_the_paper_recipe_is_told_from_the_config():
    from training.report.family import recipe_of

    assert recipe_of({"model": {"recurrence": 2, "gamma_init": 0.0}, "loss": {"attention_weight": 0.0}}) == "paper"
    assert recipe_of({"model": {"recurrence": 2, "gamma_init": 1.0}, "loss": {"attention_weight": 0.4}}) == "default"
    assert recipe_of({"model": {"recurrence": 0, "gamma_init": 0.0}, "loss": {"attention_weight": 0.0}}) == "default"
    from ccnet.checkpoint import recipe_name

    assert recipe_name(2, None, None) == "default"  # an index entry that never recorded its recipe
    assert recipe_name(2, 0.0, None) == "paper" and recipe_name(2, 0.0, 0.4) == "default"


def test_a_second_seed_that_repeats_its_models_seed_is_refused(tmp_path):
    from training.report.family import QueueRecord, finished_runs

    folder = tmp_path / "camvid_e2e_r2_s1"
    _write_run(folder, 0, 0.5)  # trained seed 0 again: the `seed` key was forgotten
    record = QueueRecord("camvid_e2e_r2_s1", "camvid_r2", folder, True, True, 2, "default")
    campaign = report_records.read_run(folder, name="camvid_r2")
    with pytest.raises(report_records.ReportError, match="give it another `seed`"):
        finished_runs([record], others=[campaign])
    assert [(r.name, r.seed) for r in finished_runs([record])] == [("camvid_r2", 0)]


def test_an_unbundled_twin_is_compared_from_its_last_validation():
    """The paper-recipe twin kept out of checkpoints/ (attention unused): gamma, lift and mIoU from its record."""
    from training.report.family_tables import recipes_table

    supervised = {"recurrence": 2, "recipe": "default", "mIoU": 0.715, "gamma": 0.848, "lift": 13.68,
                  "attention_used": True, "atlas_diagonal": [0.5, 0.25]}  # fmt: skip
    twin = {"recurrence": 2, "recipe": "paper", "finished": True, "not_bundled_because": "attention unused",
            "last_validation": {"step": 4000, "mIoU": 0.698, "gamma": 0.0149, "lift": 0.85}}  # fmt: skip
    family = {"members": [supervised], "missing": [twin], "unused_lift": 2.0, "blind_lift": 1.0}
    lines = recipes_table(family, ["Road", "Car"])
    assert "| default (γ from 1, affinity loss) | 71.5 | 0.848 | 13.68 | used | 50.0 | 25.0 |" in lines
    assert ("| paper's losses (γ from 0, no affinity loss), trained, not bundled | 69.8 | 0.015 | 0.85 | **not used** "
            "| – | – |") in lines  # fmt: skip
    assert any("iteration 4000" in line and "(attention unused)" in line for line in lines)
    no_record = {**family, "missing": [{**twin, "last_validation": None}]}
    assert recipes_table(no_record, ["Road", "Car"]) == [
        "The paper-recipe twin trained end to end is not bundled yet: no comparison."]  # fmt: skip
