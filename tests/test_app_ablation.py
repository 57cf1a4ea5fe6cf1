"""The ablation page: the report's summary.json (a fixture following its schema) and the checkpoint fallback."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from app.ablation import (
    SummaryError,
    cost_figures,
    from_checkpoints,
    lift_figure,
    miou_figure,
    per_class_figure,
    read_summary,
    results_path,
    seed_spread,
    unrolled_figure,
)
from app.settings import REPO_ROOT

ROOT = Path(__file__).absolute().parent.parent
MAIN = str(ROOT / "app" / "main.py")
PAGE = str(ROOT / "app" / "pages" / "ablation.py")
CLASSES = ["Sky", "Road", "Car"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def model(name, loops, ccl=False, miou=0.5):
    at_r = {} if loops == 0 else {"1": miou - 0.02, "2": miou, "3": miou + 0.01}
    return {
        "name": name, "trained_recurrence": loops, "ccl": ccl, "seed": 0, "mIoU": miou,
        "per_class_iou": {c: miou + 0.1 * k for k, c in enumerate(CLASSES)}, "mIoU_at_recurrence": at_r,
        "params": 1000 + loops, "train_seconds": 50.0, "images_per_s": 30.0, "train_device": "test",
    }  # fmt: skip


BUNDLED = {"camvid_r0": 0.41, "camvid_r1": 0.42, "camvid_r2": 0.43, "camvid_r3": 0.44, "camvid_r2_ccl": 0.45}


def summary_document() -> dict:
    """A summary.json exactly in the schema `python -m training.report` writes, with made-up numbers."""
    costs = [
        {"input": list(size), "feature": [size[0] // 8, size[1] // 8], "recurrence": r, "channels": 128,
         "gflops_increment": 0.1 * r * size[0] / 360, "memory_mb_increment": 2.0 * r * size[0] / 360}
        for size in ((360, 480), (769, 769)) for r in (1, 2, 3)
    ]  # fmt: skip
    return {
        "dataset": "camvid", "split": "val", "generated": "2026-11-26T02:00:00+00:00",
        "generated_by": "python -m training.report", "classes": CLASSES,
        "models": [model("camvid_r0", 0, miou=0.41), model("camvid_r1", 1, miou=0.42), model("camvid_r2", 2, miou=0.43),
                   model("camvid_r3", 3, miou=0.44), model("camvid_r2_ccl", 2, ccl=True, miou=0.45)],
        # Seed 0 of every model (the bundled one), and a second seed of R = 2 only: n = 1 beside n = 2.
        "seeds": [{"name": m, "seed": 0, "best_val_mIoU": v} for m, v in BUNDLED.items()]
        + [{"name": "camvid_r2", "seed": 1, "best_val_mIoU": 0.44}],
        "costs": costs,
        "paper_table2": [
            {"setting": "ResNet-101 baseline, Cityscapes val (arXiv)", "recurrence": 0, "mIoU": 0.751,
             "gflops_increment": None, "memory_mb_increment": None},
            {"setting": "+ RCCA R=1 (arXiv)", "recurrence": 1, "mIoU": 0.780, "gflops_increment": 8.3,
             "memory_mb_increment": 53.0},
            {"setting": "+ RCCA R=2 (arXiv)", "recurrence": 2, "mIoU": 0.798, "gflops_increment": 16.5,
             "memory_mb_increment": 127.0},
            {"setting": "+ Non-local (arXiv)", "recurrence": None, "mIoU": 0.791, "gflops_increment": 108.0,
             "memory_mb_increment": 1411.0},
        ],
    }  # fmt: skip


def with_lift(document: dict) -> dict:
    """The summary with the report's newer keys: gamma and same-class lift per model, lift and gamma per seed."""
    for entry in document["models"]:
        loops = entry["trained_recurrence"]
        at = {} if loops == 0 else {"1": 1.1, "2": 2.0 + loops, "3": 2.5 + loops}
        entry |= {"gamma": None if loops == 0 else 0.9, "lift": at.get(str(loops)), "lift_at_recurrence": at}
    for seed in document["seeds"]:
        seed |= {"lift": None if seed["name"] == "camvid_r0" else 3.0, "gamma": None}
    return document


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_results_path_default_and_setting(tmp_path):
    assert results_path({}) == REPO_ROOT / "results" / "camvid" / "summary.json"
    assert results_path({"CCNET_RESULTS": str(tmp_path / "s.json")}) == tmp_path / "s.json"


def test_summary_is_read_and_charted_from_the_file_values(tmp_path):
    document = summary_document()
    ablation = read_summary(write(tmp_path / "summary.json", document))
    assert ablation.problems == [] and len(ablation.models) == 5 and ablation.dataset == "camvid"
    miou = go.Figure(miou_figure(ablation).to_dict())  # validated
    ours, paper = miou.data
    assert list(ours.x) == ["R = 0 (no attention)", "R = 1", "R = 2", "R = 3", "R = 2 + CCL"]
    assert list(ours.y) == [0.41, 0.42, pytest.approx(0.435), 0.44, 0.45]  # R = 2: the mean of its two seeds
    assert list(paper.x) == ["R = 0 (no attention)", "R = 1", "R = 2"] and list(paper.y) == [0.751, 0.780, 0.798]
    unrolled = go.Figure(unrolled_figure(ablation).to_dict())
    assert len(unrolled.data) == 4 and list(unrolled.data[0].x) == [1, 2, 3]  # the R = 0 model has none
    flops, memory = (go.Figure(f.to_dict()) for f in cost_figures(ablation))
    assert [len(t.x) for t in flops.data] == [3, 3, 2]  # two input sizes, then the paper's R = 1, 2
    assert list(memory.data[-1].y) == [53.0, 127.0]
    per_class = go.Figure(per_class_figure(ablation).to_dict())
    assert list(per_class.data[0].x) == CLASSES and per_class.data[0].y[2] == pytest.approx(0.61)


def test_error_bars_show_the_seed_spread_and_one_seed_says_n_1(tmp_path):
    ablation = read_summary(write(tmp_path / "summary.json", summary_document()))
    spread = seed_spread(ablation)
    assert spread["camvid_r2"] == {"mean": pytest.approx(0.435), "std": pytest.approx(0.01 / 2**0.5), "n": 2}
    assert spread["camvid_r1"] == {"mean": 0.42, "std": None, "n": 1}
    ours = go.Figure(miou_figure(ablation).to_dict()).data[0]  # validated
    assert ours.error_y.type == "data" and ours.error_y.visible
    assert list(ours.error_y.array) == [None, None, pytest.approx(0.01 / 2**0.5), None, None]  # only R = 2 has two
    assert list(ours.text) == ["41.0 (n = 1)", "42.0 (n = 1)", "43.5 ± 0.7 (n = 2)", "44.0 (n = 1)", "45.0 (n = 1)"]
    document = summary_document()
    document["seeds"] = []
    no_seeds = go.Figure(miou_figure(read_summary(write(tmp_path / "none.json", document))).to_dict()).data[0]
    assert no_seeds.error_y.array is None and list(no_seeds.y) == list(BUNDLED.values())  # the bundled values


def test_lift_chart_per_r_with_the_blind_line(tmp_path):
    assert lift_figure(read_summary(write(tmp_path / "old.json", summary_document()))) is None  # before the lift
    ablation = read_summary(write(tmp_path / "summary.json", with_lift(summary_document())))
    assert ablation.problems == [] and ablation.models[2]["lift"] == 4.0
    figure = go.Figure(lift_figure(ablation).to_dict())
    assert len(figure.data) == 4  # the four attention models; the baseline has no attention
    assert list(figure.data[0].x) == [1, 2, 3] and list(figure.data[0].y) == [1.1, 3.0, 3.5]
    (line,) = figure.layout.shapes
    assert (line.y0, line.y1, line.line.dash) == (1.0, 1.0, "dash")
    assert "blind to class" in figure.layout.annotations[0].text


def test_invalid_lift_is_dropped_and_named(tmp_path):
    document = with_lift(summary_document())
    document["models"][1]["lift"] = -2.0
    document["models"][2]["lift_at_recurrence"] = {"1": "high"}
    ablation = read_summary(write(tmp_path / "summary.json", document))
    assert len(ablation.models) == 5 and "lift" not in ablation.models[1]
    assert "lift_at_recurrence" not in ablation.models[2] and ablation.models[2]["lift"] == 4.0
    assert "`models[1]`: invalid lift ignored." in ablation.problems


def test_malformed_entries_are_skipped_and_named(tmp_path):
    document = summary_document()
    document["models"][1]["mIoU"] = 1.7
    del document["models"][2]["per_class_iou"]
    document["costs"][0]["input"] = "360x480"
    document["seeds"] = "nope"
    ablation = read_summary(write(tmp_path / "summary.json", document))
    assert [m["name"] for m in ablation.models] == ["camvid_r0", "camvid_r3", "camvid_r2_ccl"]
    assert len(ablation.costs) == 5 and ablation.seeds == []
    joined = "\n".join(ablation.problems)
    assert "`models[1]` left out: missing or invalid mIoU" in joined and "per_class_iou" in joined
    assert "`costs[0]`" in joined and "`seeds` is not a list" in joined


def test_missing_and_broken_files(tmp_path):
    assert read_summary(tmp_path / "absent.json") is None
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SummaryError, match="cannot be read as JSON"):
        read_summary(tmp_path / "broken.json")
    with pytest.raises(SummaryError, match="holds a list"):
        read_summary(write(tmp_path / "list.json", [1, 2]))


def test_fallback_reads_the_real_checkpoints_metadata():
    ablation = from_checkpoints(ROOT / "checkpoints")
    index = json.loads((ROOT / "checkpoints" / "index.json").read_text())
    assert {m["name"]: m["mIoU"] for m in ablation.models} == {m["name"]: m["mIoU"] for m in index["models"]}
    sidecar = json.loads((ROOT / "checkpoints" / "camvid_r2.json").read_text())
    r2 = next(m for m in ablation.models if m["name"] == "camvid_r2")
    assert r2["per_class_iou"] == sidecar["metrics"]["per_class_iou"] and len(ablation.classes) == 11
    assert cost_figures(ablation) is None and unrolled_figure(ablation) is None


def run_page(monkeypatch, summary: Path, checkpoints: Path = ROOT / "checkpoints") -> AppTest:
    monkeypatch.setenv("CCNET_RESULTS", str(summary))
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    app = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def chart_titles(app: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["data"][0].get("name", "") for chart in app.get("plotly_chart")]


def test_page_draws_every_chart_from_the_summary(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", summary_document()))
    assert len(app.get("plotly_chart")) == 5  # mIoU, unrolled, FLOPs, memory, per-class
    assert not app.warning
    assert "generated 2026-11-26T02:00:00+00:00" in app.caption[0].value
    assert len(app.dataframe) == 2  # models and seeds


def test_page_with_lift_and_seeds_draws_the_lift_chart(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", with_lift(summary_document())))
    assert len(app.get("plotly_chart")) == 6  # mIoU, unrolled, lift, FLOPs, memory, per-class
    assert "One seed only (n = 1, no error bar)" in app.caption[1].value and not app.warning
    lift = json.loads(app.get("plotly_chart")[2].proto.spec)
    assert lift["layout"]["shapes"][0]["y0"] == 1.0 and len(lift["data"]) == 4


def test_page_without_a_summary_falls_back_to_the_checkpoints(monkeypatch, tmp_path):
    app = run_page(monkeypatch, tmp_path / "absent.json")
    assert "is not there yet" in app.warning[0].value and "python -m training.report" in app.warning[0].value
    assert len(app.get("plotly_chart")) == 2  # mIoU and per-class IoU from the sidecars
    assert any("No cost measurements" in info.value for info in app.info)


def test_page_with_a_broken_summary_says_so_and_keeps_working(monkeypatch, tmp_path):
    (tmp_path / "summary.json").write_text("{")
    app = run_page(monkeypatch, tmp_path / "summary.json")
    assert "cannot be read as JSON" in app.warning[0].value
    assert len(app.get("plotly_chart")) == 2


def test_summary_without_models_keeps_its_costs(monkeypatch, tmp_path):
    document = summary_document()
    document["models"] = []
    app = run_page(monkeypatch, write(tmp_path / "summary.json", document))
    assert any("No usable model" in w.value for w in app.warning)
    assert len(app.get("plotly_chart")) == 4  # mIoU, FLOPs, memory (from the summary), per-class (checkpoints)


def test_nothing_at_all_is_a_message(monkeypatch, tmp_path):
    app = run_page(monkeypatch, tmp_path / "absent.json", checkpoints=tmp_path / "none")
    assert any("No model results" in info.value for info in app.info)
    assert not app.get("plotly_chart")


def test_page_is_reachable_from_the_explorer(monkeypatch, tmp_path):
    monkeypatch.setenv("CCNET_RESULTS", str(write(tmp_path / "summary.json", summary_document())))
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    app.switch_page("pages/ablation.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value.startswith("Ablation") and len(app.get("plotly_chart")) == 5


def test_log_axes_get_spaced_tick_labels():
    from app.ablation import log_ticks

    few = log_ticks([0.9, 1.8, 2.7])
    assert few["tickvals"] == [1.0, 2.0] and few["ticktext"] == ["1", "2"]
    wide = log_ticks([18.0, 53.0, 127.0, 1411.0])
    assert wide["tickvals"] == [30.0, 100.0, 300.0, 1000.0] and "2" not in wide["ticktext"]
    assert log_ticks([]) == {}


def _with_heads(document: dict) -> dict:
    from training.report.goals import head_ordering
    from training.report.summary import head_summary

    records = [
        {"kind": kind, "seed": seed, "mIoU": base + 0.01 * seed, "lift": 3.0, "gamma": 0.9}
        for kind, base in (("r0", 0.60), ("r2", 0.70), ("r3", 0.705))
        for seed in range(5)
    ]
    heads = head_summary(records)
    return document | {"heads": heads, "head_ordering": head_ordering(heads)}


def test_heads_are_drawn_with_their_seeds_and_intervals(tmp_path):
    from app.ablation import heads_figure

    ablation = read_summary(write(tmp_path / "summary.json", _with_heads(summary_document())))
    assert ablation.problems == [] and [h["kind"] for h in ablation.heads] == ["r0", "r2", "r3"]
    figure = go.Figure(heads_figure(ablation).to_dict())
    seeds, means = figure.data
    assert len(seeds.y) == 15 and list(means.x) == ["R = 0", "R = 2", "R = 3"]
    assert list(means.y) == pytest.approx([0.62, 0.72, 0.725])
    assert means.error_y.array[0] == pytest.approx(ablation.heads[0]["ci95"])
    assert heads_figure(read_summary(write(tmp_path / "plain.json", summary_document()))) is None


def test_the_page_draws_the_heads_and_reads_the_intervals(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", _with_heads(summary_document())))
    assert len(app.get("plotly_chart")) == 6  # the five charts and the heads
    caption = next(c.value for c in app.caption if "95% t-interval" in c.value)
    assert "R = 2 vs R = 0: above (+10.0 points), paired over 5 seeds above (+10.0 ± 0.0)" in caption
    assert "R = 3 vs R = 2: overlap (+0.5 points), paired over 5 seeds above (+0.5 ± 0.0)" in caption


def test_an_ordering_without_paired_seeds_reads_as_before():
    from app.ablation import ordering_text

    pair = {"lower": "r0", "higher": "r2", "verdict": "overlap", "difference": 0.012}
    assert ordering_text(pair) == "R = 2 vs R = 0: overlap (+1.2 points)"
    assert ordering_text(pair | {"paired": None}) == ordering_text(pair)
    paired = {"n": 5, "mean": 0.011, "ci95": 0.004, "verdict": "above"}
    assert ordering_text(pair | {"paired": paired}).endswith(", paired over 5 seeds above (+1.1 ± 0.4)")
    assert ordering_text(pair | {"paired": {"verdict": "above"}}) == ordering_text(pair)  # a broken block: left out


def test_a_head_and_the_paper_twin_are_told_apart_from_the_default():
    from app.ablation import model_label

    default = {"trained_recurrence": 2, "ccl": False}
    paper = {"trained_recurrence": 2, "ccl": False, "head_kind": "r2_paper"}
    ccl = {"trained_recurrence": 2, "ccl": True, "head_kind": "r2_ccl"}
    labels = [model_label(default), model_label(paper), model_label(ccl), model_label({**default, "head_kind": "r2"})]
    assert labels == ["R = 2", "R = 2, paper's losses, head", "R = 2 + CCL, head", "R = 2, head"]
    assert model_label({"trained_recurrence": 0, "ccl": False}) == "R = 0 (no attention)"


def _with_family(document: dict) -> dict:
    """The summary as today's report writes it: two end-to-end members, heads marked, the family block."""
    for entry in document["models"]:
        entry["trained"] = "end to end" if entry["name"] in ("camvid_r0", "camvid_r2") else "head"
        entry["recipe"] = "default"
    members = [
        {"name": "camvid_r0", "recurrence": 0, "recipe": "default", "mIoU": 0.41, "seeds": {"0": 0.40, "1": 0.42}},
        {"name": "camvid_r2", "recurrence": 2, "recipe": "default", "mIoU": 0.43, "seeds": {"0": 0.46, "1": 0.44}},
    ]
    curves = [
        {"run": "campaign", "member": "camvid_r2", "seed": 0, "finished": True, "recurrence": 2, "recipe": "default",
         "points": [{"step": 250, "mIoU": 0.30}, {"step": 500, "mIoU": 0.46}]},
        {"run": "camvid_e2e_r1", "member": "camvid_e2e_r1", "seed": 0, "finished": False, "recurrence": 1,
         "recipe": "default", "points": [{"step": 250, "mIoU": 0.31}]},
    ]  # fmt: skip
    missing = [{"recurrence": 1, "recipe": "default", "run": "camvid_e2e_r1", "step": 250},
               {"recurrence": 2, "recipe": "paper", "run": None, "step": None}]  # fmt: skip
    family = {"members": members, "missing": missing, "curves": curves, "seed_std": 0.0141, "seed_dof": 2,
              "r2_minus_r0": {"difference": 0.04, "verdict": "above", "noise": 0.028, "n": [2, 2]},
              "paper_r2_minus_r0": 0.047}  # fmt: skip
    return document | {"family": family}


def test_the_family_is_drawn_alone_with_its_seeds_and_spread(tmp_path):
    from app.ablation import curves_figure, family_note

    ablation = read_summary(write(tmp_path / "summary.json", _with_family(with_lift(summary_document()))))
    assert ablation.problems == [] and [m["name"] for m in ablation.end_to_end] == ["camvid_r0", "camvid_r2"]
    ours, seeds, paper = go.Figure(miou_figure(ablation).to_dict()).data
    assert list(ours.x) == ["R = 0 (no attention)", "R = 2"] and list(ours.y) == pytest.approx([0.41, 0.45])
    assert list(ours.error_y.array) == pytest.approx([0.0141 / 2**0.5] * 2)  # the standard error of a 2-seed mean
    assert ours.text[1] == "45.0 ± 1.4 (n = 2)"  # the text gives σ itself
    assert list(seeds.y) == [0.40, 0.42, 0.46, 0.44] and list(paper.x) == ["R = 0 (no attention)", "R = 2"]
    curves = go.Figure(curves_figure(ablation).to_dict()).data
    assert [c.name for c in curves] == ["R = 2, seed 0", "R = 1, seed 0 (training)"]
    assert curves[1].line.dash == "dot" and list(curves[0].y) == [0.30, 0.46]
    note = family_note(ablation.family)
    assert "R = 2 minus R = 0: +4.0 points, beyond the seed spread (the paper: +4.7)." in note
    assert "Not trained yet: R = 1, R = 2, paper's losses" in note
    # Heads stay out of every chart unless asked for, and then say so in their legend name.
    names = [trace.name for trace in lift_figure(ablation).data]
    assert names == ["camvid_r2 (trained R = 2)"]
    with_heads = [trace.name for trace in lift_figure(ablation, with_heads=True).data]
    assert with_heads[0] == "camvid_r2 (trained R = 2)" and all(", head)" in n for n in with_heads[1:])
    assert len(unrolled_figure(ablation).data) == 1 and len(per_class_figure(ablation).data) == 2


def test_a_family_without_seeds_says_so(tmp_path):
    from app.ablation import family_note

    document = _with_family(summary_document())
    document["family"] |= {"seed_std": None, "r2_minus_r0": {"difference": 0.02, "verdict": None}}
    ablation = read_summary(write(tmp_path / "summary.json", document))
    ours = go.Figure(miou_figure(ablation).to_dict()).data[0]
    assert ours.error_y.array is None and "no second seed yet" in family_note(ablation.family)
    assert "not judged yet" in family_note(ablation.family)
    document["family"]["members"][0]["seeds"] = {}  # no record: the bundled file's value, said so
    ours = go.Figure(miou_figure(read_summary(write(tmp_path / "bundled.json", document))).to_dict()).data[0]
    assert ours.text[0] == "41.0 (bundled file, no seed record)" and ours.y[0] == 0.41
    document["family"] = ["not", "an object"]
    broken = read_summary(write(tmp_path / "broken.json", document))
    assert broken.family == {} and any("`family` is not an object" in p for p in broken.problems)


def test_the_page_draws_the_family_first_and_the_heads_on_request(monkeypatch, tmp_path):
    path = write(tmp_path / "summary.json", _with_family(with_lift(_with_heads(summary_document()))))
    app = run_page(monkeypatch, path)
    assert not app.exception and app.subheader[0].value == "End to end: one network per loop count"
    assert app.subheader[-1].value == "Heads on one frozen backbone: a separate, many-seeds study"
    charts = app.get("plotly_chart")
    assert len(charts) == 8  # family, curves, unrolled, lift, FLOPs, memory, per-class, heads
    lift = json.loads(charts[3].proto.spec)
    assert [trace["name"] for trace in lift["data"]] == ["camvid_r2 (trained R = 2)"]
    app.toggle(key="ablation_with_heads").set_value(True).run()
    lift = json.loads(app.get("plotly_chart")[3].proto.spec)
    assert len(lift["data"]) == 4 and not app.exception


def test_a_member_trained_but_not_bundled_says_why_not_that_it_is_untrained():
    from app.ablation import family_note

    why = "attention unused: |gamma| = 0.0149 < 0.1"
    note = family_note({"missing": [{"recurrence": 2, "recipe": "paper", "finished": True, "not_bundled_because": why},
                                    {"recurrence": 1, "recipe": "default", "finished": False}]})  # fmt: skip
    assert f"trained, not bundled ({why})" in note
    assert "Not trained yet: R = 1" in note and "Not trained yet: R = 1, " not in note
