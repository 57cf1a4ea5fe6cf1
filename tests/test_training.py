"""The training pipeline in-process: learning, run folders, config, bad runs, losses, export."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_training_config

from ccnet.checkpoint import load_checkpoint, read_index
from ccnet.datasets import find_dataset
from training import class_weights as class_weights_module
from training import train as train_module
from training.config import ConfigError, differing_keys, flatten, load_config
from training.errors import RunFolderError
from training.export import export_run
from training.pretrained import SOURCES
from training.run_folder import read_metrics
from training.sampling import ResumableShardSampler
from training.state import load_training_state
from training.train import poly_lr, train

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CCNET_CACHE_DIR", str(tmp_path / "cache"))


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


# --- it learns ----------------------------------------------------------------------------------------


def test_overfits_two_images(camvid_factory):
    root = camvid_factory({"train": 2})
    shutil.copytree(root / "train", root / "val")
    shutil.copytree(root / "trainannot", root / "valannot")
    config = tiny_training_config(
        root,
        data={"scale_range": [1.0, 1.0], "flip": False},
        model={"dropout": 0.0},
        optim={"iterations": 150, "lr": 0.05},
        train={"val_every": 150, "save_every": 150, "log_every": 50},
    )
    summary = train(config, root.parent / "run", show_progress=False)
    assert summary.step == 150
    assert summary.last_scores["pixel_accuracy"] >= 0.9  # evaluated in eval mode on the same two images


# --- what a run leaves behind -------------------------------------------------------------------------


def test_run_folder_holds_config_logs_and_checkpoints(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory())
    out = tmp_path / "run"
    summary = train(config, out, show_progress=False)
    assert summary.step == 6 and summary.best_step in (3, 6)
    assert yaml.safe_load((out / "config.yaml").read_text()) == config
    records = read_metrics(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["kind"] == "val"] == [3, 6]
    assert {"loss", "seg", "aux", "lr", "images_per_s"} <= set(records[0])
    assert set(records[-1]["per_class_iou"]) == set(find_dataset("camvid", config["data"]["root"], "val").classes.names)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["world_size"] == 1 and run["code_version"].startswith("0.1.0")
    model, metadata = load_checkpoint(out / "best", device="cpu")
    assert metadata["dataset"] == "camvid" and metadata["input_size"] == [32, 48] and metadata["recurrence"] == 2
    assert metadata["train_config"]["data"]["root"] is None  # a local path is not shipped
    assert metadata["train_config"]["optim"] == config["optim"] and metadata["metrics"]["step"] == summary.best_step
    assert metadata["mean"] == [123.675, 116.28, 103.53]
    state = load_training_state(out / "state.pt")
    assert state["step"] == 6 and set(state["rng"]) == {"numpy", "python", "torch", "cuda"}


def test_folder_with_another_run_is_refused_unless_resume_or_overwrite(camvid_factory, tmp_path):
    root = camvid_factory()
    config = tiny_training_config(root, optim={"iterations": 2}, train={"val_every": 2})
    out = tmp_path / "run"
    train(config, out, show_progress=False)
    other = tiny_training_config(root, optim={"iterations": 2, "lr": 0.02}, train={"val_every": 2})
    with pytest.raises(RunFolderError, match=r"already holds a different run \(differs in optim.lr\).*--resume"):
        train(other, out, show_progress=False)
    with pytest.raises(RunFolderError, match="already holds a run with this configuration"):
        train(config, out, show_progress=False)
    with pytest.raises(RunFolderError, match="--resume would change the run.*optim.lr"):
        train(other, out, resume=True, show_progress=False)
    assert train(config, out, resume=True, show_progress=False).step == 2  # finished: nothing left to do
    summary = train(other, out, overwrite=True, show_progress=False)
    assert summary.step == 2 and yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.02
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2]  # old log replaced
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no training run"):
        train(config, stranger, show_progress=False)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(config, tmp_path / "empty", resume=True, show_progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_state(camvid_factory, tmp_path, capsys):
    root = camvid_factory()
    config_file = tmp_path / "explode.yaml"
    config = tiny_training_config(root, optim={"iterations": 20, "lr": 1e12}, train={"save_every": 1, "val_every": 100})
    config_file.write_text(yaml.safe_dump(config))
    code = train_module.main(["--config", str(config_file), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == train_module.EXIT_NON_FINITE
    message = capsys.readouterr().err
    assert "at iteration" in message or "after iteration" in message
    assert "Last good training state" in message and "--overwrite" in message
    state = load_training_state(tmp_path / "run" / "state.pt")
    assert 1 <= state["step"] < 20
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert f"iteration {state['step']})" in message  # names the state it kept


def test_bad_config_and_data_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CAMVID_ROOT", raising=False)
    code = train_module.main(["--out", str(tmp_path / "run"), "--set", "optim.lr=fast"])
    assert code == 2 and "optim.lr" in capsys.readouterr().err
    code = train_module.main(["--out", str(tmp_path / "run"), "--set", "model.depth=3"])
    assert code == 2 and "unknown config key 'model.depth'" in capsys.readouterr().err
    code = train_module.main(["--out", str(tmp_path / "run")])
    assert code == 2 and "CAMVID_ROOT" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written: the same command works once the data is there


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_module.parse_args(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--resume" in text and "--overwrite" in text and "--set" in text


# --- the attention scale gamma -----------------------------------------------------------------------


def test_gamma_gets_its_own_learning_rate_and_decay_and_is_logged(camvid_factory, tmp_path):
    config = tiny_training_config(
        camvid_factory(), optim={"iterations": 2, "gamma_lr_mult": 10.0, "gamma_weight_decay": 0.0},
        train={"val_every": 2},
    )  # fmt: skip
    trainer = train_module.Trainer(config, tmp_path / "run", resume=False, overwrite=False, show_progress=False)
    rest, gammas = trainer.optimizer.param_groups
    assert len(gammas["params"]) == 1 and gammas["params"][0] is trainer.model.head.attention.cca.gamma
    assert gammas["weight_decay"] == 0.0 and rest["weight_decay"] == config["optim"]["weight_decay"]
    assert len(rest["params"]) + 1 == len(list(trainer.model.parameters()))
    trainer._set_lr()
    assert gammas["lr"] == pytest.approx(10 * rest["lr"]) and rest["lr"] == pytest.approx(config["optim"]["lr"])
    trainer.run()
    validation = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "val"][-1]
    assert validation["gamma/head.attention.cca.gamma"] == pytest.approx(trainer.model.head.attention.cca.gamma.item())


def test_default_config_keeps_one_parameter_group(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory(), optim={"iterations": 1})
    trainer = train_module.Trainer(config, tmp_path / "run", resume=False, overwrite=False, show_progress=False)
    assert len(trainer.optimizer.param_groups) == 1  # as before: training states saved earlier still resume


def test_bad_gamma_settings_are_refused(camvid_factory):
    root = camvid_factory()
    for bad in ({"gamma_lr_mult": 0}, {"gamma_lr_mult": "x"}, {"gamma_weight_decay": -1.0}):
        with pytest.raises(ConfigError, match="gamma"):
            tiny_training_config(root, optim=bad)


# --- losses -------------------------------------------------------------------------------------------


def test_ohem_class_weights_and_ccl_train(camvid_factory, tmp_path):
    config = tiny_training_config(
        camvid_factory(),
        model={"ccl_channels": 16},
        loss={"ohem": True, "ohem_min_kept": 500, "class_weights": "enet", "ccl": True},
        optim={"iterations": 2},
        train={"val_every": 2},
    )
    train(config, tmp_path / "run", show_progress=False)
    first = read_metrics(tmp_path / "run")[0]
    assert first["ccl"] >= 0 and np.isfinite(first["loss"])
    weights = json.loads((tmp_path / "run" / "run.json").read_text())["class_weights"]
    assert len(weights) == 11 and all(1.0 <= w <= 1 / np.log(1.02) for w in weights)


def test_enet_class_weights_are_counted_once_and_cached(camvid_factory, monkeypatch):
    spec = find_dataset("camvid", camvid_factory({"train": 3}), "train")
    counts = class_weights_module.class_pixel_counts(spec)
    labels = np.stack([np.asarray(__import__("PIL.Image").Image.open(s.label)) for s in spec.samples])
    assert counts.tolist() == [int((labels == k).sum()) for k in range(11)]
    weights = class_weights_module.enet_weights(counts)
    assert weights[0] == pytest.approx(1 / np.log(1.02 + counts[0] / counts.sum()))
    monkeypatch.setattr(class_weights_module, "count_pixels", lambda *a, **k: pytest.fail("not cached"))
    assert class_weights_module.class_pixel_counts(spec).tolist() == counts.tolist()


# --- schedule, data order, config ---------------------------------------------------------------------


def test_poly_schedule():
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)


def test_sampler_resumes_mid_epoch_and_shards_like_distributed_sampler():
    full = _take(iter(ResumableShardSampler(7, seed=1)), 20)
    assert _take(iter(ResumableShardSampler(7, seed=1, start=9)), 11) == full[9:]
    assert sorted(i for _, i in full[:7]) == list(range(7)) and {e for e, _ in full[:7]} == {0}
    ranks = [_take(iter(ResumableShardSampler(8, seed=1, rank=r, world_size=2)), 4) for r in (0, 1)]
    assert sorted(i for rank in ranks for _, i in rank) == list(range(8))


def test_config_layers_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.02\nmodel:\n  recurrence: 1\n")
    config = load_config(path, ["optim.lr=0.03", "data.crop_size=[64, 64]"])
    assert config["optim"]["lr"] == 0.03 and config["model"]["recurrence"] == 1
    assert config["data"]["crop_size"] == [64, 64] and config["optim"]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="YAML reads 1e-4 as text"):
        load_config(None, ["optim.weight_decay=1e-4"])
    with pytest.raises(ConfigError, match="model.ccl_channels"):
        load_config(None, ["loss.ccl=true"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["optim.lr"])


def test_shipped_camvid_configs_differ_only_in_loops_and_ccl():
    names = ["camvid_r0", "camvid_r1", "camvid_r2", "camvid_r3", "camvid_r2_ccl"]
    configs = {name: load_config(CONFIGS / f"{name}.yaml") for name in names}
    allowed = {"model.recurrence", "model.ccl_channels", "loss.ccl"}
    for name in names:
        # The baseline has no attention to supervise; everything else is the one recipe.
        extra = {"loss.attention_weight"} if name == "camvid_r0" else set()
        assert set(differing_keys(configs["camvid_r2"], configs[name], ignore=())) <= allowed | extra, name
    assert configs["camvid_r0"]["loss"]["attention_weight"] == 0
    assert [configs[n]["model"]["recurrence"] for n in names] == [0, 1, 2, 3, 2]
    assert configs["camvid_r2_ccl"]["loss"]["ccl"] and configs["camvid_r2_ccl"]["model"]["ccl_channels"] == 16
    r2 = flatten(configs["camvid_r2"])
    assert r2["model.backbone"] == "mobilenet_v2" and r2["model.base_width"] is None
    assert r2["model.head_channels"] == 128
    assert r2["model.gamma_init"] == 1.0 and r2["loss.attention_weight"] == 0.4 and r2["optim.gamma_weight_decay"] == 0
    assert r2["model.pretrained_sha256"] == SOURCES["mobilenet_v2"].safetensors_sha256
    assert r2["optim.batch_size"] == 8 and r2["optim.lr"] == 0.01 and r2["loss.class_weights"] == "enet"


# --- export -------------------------------------------------------------------------------------------


def test_export_bundles_the_best_checkpoint_into_an_index(camvid_factory, tmp_path):
    out = tmp_path / "run"
    train(tiny_training_config(camvid_factory()), out, show_progress=False)
    bundle = tmp_path / "checkpoints"
    export_run(out, bundle / "tiny_r2", half=True, make_default=True)
    index = read_index(bundle)
    assert index["default"] == "tiny_r2" and index["models"][0]["weights_dtype"] == "float16"
    model, metadata = load_checkpoint(bundle / "tiny_r2", device="cpu")
    original = json.loads((out / "best.json").read_text())
    assert metadata["metrics"] == original["metrics"] and metadata["code_version"] == original["code_version"]


def test_pause_then_resume_from_the_run_folder_and_export(camvid_factory, tmp_path, capsys):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(tiny_training_config(camvid_factory(), optim={"iterations": 4})))
    out, bundle = tmp_path / "run", tmp_path / "checkpoints"
    assert train_module.main(["--config", str(config_file), "--out", str(out), "--stop-at", "1", "--no-progress"]) == 0
    assert "paused at iteration 1" in capsys.readouterr().out
    assert load_training_state(out / "state.pt")["step"] == 1
    summary = train(load_config(config_file), out, resume=True, show_progress=False, max_minutes=1e-6)
    assert not summary.finished and summary.step == 2  # out of time after one more iteration, state saved
    code = train_module.main(["--out", str(out), "--resume", "--export", str(bundle / "tiny"), "--no-progress"])
    assert code == 0 and "finished at iteration 4" in capsys.readouterr().out
    assert [m["name"] for m in read_index(bundle)["models"]] == ["tiny"]
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2, 3, 4]


# --- the attention recipe: pretrained-style backbone, gamma start, affinity loss, lift at validation -----


def test_mobilenet_run_with_affinity_loss_logs_gamma_and_lift(camvid_factory, tmp_path):
    config = tiny_training_config(
        camvid_factory(),
        model={"backbone": "mobilenet_v2", "base_width": None, "gamma_init": 1.0},
        loss={"attention_weight": 0.5},
        optim={"iterations": 4, "gamma_weight_decay": 0.0},
        train={"val_every": 4, "channels_last": True, "lift_cells": 4},
    )
    out = tmp_path / "run"
    summary = train(config, out, show_progress=False)
    assert summary.step == 4
    records = read_metrics(out)
    train_records = [r for r in records if r["kind"] == "train"]
    assert all(r["affinity"] > 0 for r in train_records)
    assert train_records[-1]["loss"] > train_records[-1]["seg"] + 0.4 * train_records[-1]["aux"]
    val = [r for r in records if r["kind"] == "val"][-1]
    assert abs(val["gamma/head.attention.cca.gamma"] - 1.0) < 0.5  # started at 1, not at the paper's 0
    class_names = find_dataset("camvid", config["data"]["root"], "val").classes.names
    assert val["lift"] > 0 and set(val["lift_per_class"]) <= set(class_names)
    model, metadata = load_checkpoint(out / "last", device="cpu")
    assert metadata["model_config"]["backbone"] == "mobilenet_v2"


def test_affinity_loss_on_a_baseline_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.attention_weight"):
        load_config(None, [{"model": {"recurrence": 0}, "loss": {"attention_weight": 0.4}}])


def test_pretrained_file_with_another_hash_is_refused_before_training(camvid_factory, tmp_path, capsys):
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"not the file the recipe was measured with")
    config_path = tmp_path / "config.yaml"
    config = tiny_training_config(
        camvid_factory(),
        model={"pretrained": str(weights), "pretrained_sha256": "0" * 64},
    )
    config_path.write_text(yaml.safe_dump(config))
    assert train_module.main(["--config", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) != 0
    assert "model.pretrained_sha256" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_bfloat16_training_on_cpu_runs_and_records_its_precision(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory(), train={"amp": "bfloat16", "channels_last": False})
    summary = train(config, tmp_path / "run", show_progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert summary.step == 6 and len(losses) == 6 and all(math.isfinite(v) for v in losses)
    _, metadata = load_checkpoint(tmp_path / "run" / "last", device="cpu")
    assert metadata["train_config"]["train"]["amp"] == "bfloat16"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, [{"train": {"amp": "int8"}}])


def test_a_compiled_run_trains_and_resumes_in_another_precision(camvid_factory, tmp_path, capsys):
    """train.compile and the precision are per-machine choices (the campaign queue's probe): a run started compiled
    in float32 resumes eager in bfloat16, and the run record says what each part used."""
    config = tiny_training_config(camvid_factory(), optim={"iterations": 4, "batch_size": 2},
                                  train={"compile": True, "amp": False, "val_every": 2})  # fmt: skip
    run = tmp_path / "run"
    summary = train_module.train(config, run, show_progress=False, stop_at=2)
    assert summary.step == 2 and "torch.compile on" in capsys.readouterr().err
    resumed_config = load_config(None, [config, {"train": {"compile": False, "amp": "bfloat16"}}])
    summary = train_module.train(resumed_config, run, resume=True, show_progress=False)
    assert summary.finished and summary.step == 4
    losses = [r["loss"] for r in read_metrics(run) if r["kind"] == "train"]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    record = json.loads((run / "run.json").read_text())
    assert record["precision"]["amp"] == "float32" and record["resumed"][0]["precision"]["amp"] == "bfloat16"
