"""The campaign queue (training/queue.py): named runs trained in order, paused, resumed from git, exported."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import tiny_training_config

from training import campaign
from training import queue as queue_module
from training.train import train


@pytest.fixture
def tiny_queue(camvid_factory, tmp_path, monkeypatch):
    """A two-run queue on a synthetic CamVid, its folders under tmp_path (as on a fresh clone)."""
    root = camvid_factory({"train": 4, "val": 2})
    base = tmp_path / "configs" / "base.yaml"
    base.parent.mkdir()
    base.write_text(yaml.safe_dump(tiny_training_config(root, optim={"iterations": 4, "batch_size": 2})))
    spec = {"base": "base.yaml", "runs": [
        {"name": "tiny_r0", "set": {"model.recurrence": 0, "loss.attention_weight": 0.0}},
        {"name": "tiny_r1_s1", "set": {"model.recurrence": 1, "seed": 1}, "seed_of": "tiny_r1"},
    ]}  # fmt: skip
    path = base.parent / "queue.yaml"
    path.write_text(yaml.safe_dump(spec))
    for name, folder in (("SAVED_ROOT", "repo/campaign"), ("RUNS_ROOT", "runs"), ("CHECKPOINTS", "repo/checkpoints")):
        monkeypatch.setattr(queue_module, name, tmp_path / folder)
    monkeypatch.setattr(queue_module, "PROBES", tmp_path / "repo" / "campaign" / "probes.json")
    monkeypatch.setattr(campaign, "TRAINING_FLAG", tmp_path / "runs" / "TRAINING_RUNNING")  # never the real one
    return queue_module.load_queue(path), root


def test_the_queue_trains_each_run_with_its_settings_exports_it_and_keeps_no_state(tiny_queue):
    from ccnet.checkpoint import read_index, read_metadata

    queue, root = tiny_queue
    assert [(entry.name, entry.seed_of) for entry in queue] == [("tiny_r0", None), ("tiny_r1_s1", "tiny_r1")]
    before = dict(queue_module.os.environ)
    assert queue_module.run_queue(queue, None, str(root), run_probe=False) == 0
    assert dict(queue_module.os.environ) == before  # the data root goes to the trainer, not into this process
    for entry, recurrence, seed in ((queue[0], 0, 0), (queue[1], 1, 1)):
        bundled = entry.seed_of is None  # another seed of a bundled model is a record, never a bundled checkpoint
        checkpoint = queue_module.CHECKPOINTS / entry.name if bundled else entry.run / "last"
        metadata = read_metadata(checkpoint)
        assert metadata["step"] == 4 and metadata["recurrence"] == recurrence and metadata["seed"] == seed
        assert metadata["weights_dtype"] == ("float16" if bundled else "float32")
        record = json.loads((entry.saved / "finished.json").read_text())
        assert record["checkpoint"] == (entry.name if bundled else None)
        assert record["save_id"] == metadata["save_id"] and record["step"] == 4
        assert not list(entry.saved.glob("state.pt*"))  # a finished run commits its curve, never its state
        assert (entry.saved / "metrics.jsonl").is_file()
    assert {m["name"] for m in read_index(queue_module.CHECKPOINTS)["models"]} == {"tiny_r0"}
    rows = queue_module.status_rows(queue)
    assert [row["state"] for row in rows] == ["finished", "finished"] and all(row["mIoU"] >= 0 for row in rows)
    assert "| tiny_r0 | finished | 4/4 |" in queue_module.format_status(rows)
    assert queue_module.save_current(queue) == "every run is finished: nothing to save"


def test_a_paused_run_is_saved_and_resumes_from_git_on_a_fresh_machine(tiny_queue):
    queue, root = tiny_queue
    first = queue[0]
    config = tiny_training_config(root, optim={"iterations": 4, "batch_size": 2},
                                  model={"recurrence": 0}, loss={"attention_weight": 0.0})  # fmt: skip
    train(config, first.run, show_progress=False, stop_at=2)  # a session that paused at iteration 2
    assert queue_module.save_current(queue).startswith("saved tiny_r0 at iteration 2")
    assert [row["state"] for row in queue_module.status_rows(queue)] == ["in progress", "waiting"]
    shutil.rmtree(queue_module.RUNS_ROOT)  # the next machine has only the repository
    assert queue_module.run_queue(queue[:1], None, str(root), run_probe=False) == 0
    assert first.finished and json.loads((first.saved / "run.json").read_text())["resumed"][0]["step"] == 2


def test_the_time_limit_pauses_the_queue_before_a_run_starts(tiny_queue):
    queue, root = tiny_queue
    assert queue_module.run_queue(queue, 0.01, str(root), run_probe=False) == 0  # under MIN_MINUTES: nothing runs
    assert not any(entry.run.exists() or entry.finished for entry in queue)


def test_a_malformed_queue_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "queue.yaml"
    path.write_text(yaml.safe_dump({"base": "b.yaml", "runs": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(ValueError, match="unique name"):
        queue_module.load_queue(path)
    path.write_text("runs: 3\n")
    with pytest.raises(ValueError, match="expected `base"):
        queue_module.load_queue(path)
    path.write_text(yaml.safe_dump({"base": "b.yaml", "runs": [{"name": "a", "seed_of": 3}]}))
    with pytest.raises(ValueError, match="seed_of"):
        queue_module.load_queue(path)
    path.write_text(yaml.safe_dump({"base": "b.yaml", "runs": [{"name": "a_s1", "seed_of": "a", "set": {}}]}))
    with pytest.raises(ValueError, match="set its `seed`"):
        queue_module.load_queue(path)
    assert queue_module.main(["status", "--queue", str(path)]) == 2


def test_the_probe_choice_is_recorded_per_machine_and_reused(tiny_queue, monkeypatch):
    queue, root = tiny_queue
    calls = []

    def fake_subprocess(command, cwd, check):  # the probe's own process, measured for real in test_speed_probe
        calls.append(command)
        out = command[command.index("--json") + 1]
        result = {"machine": queue_module.machine(), "samples": {"float32": [2.0, 2.2], "float32 + compile": [1.0]},
                  "choice": "float32 + compile", "settings": {"amp": False, "channels_last": False, "compile": True}}
        queue_module.Path(out).parent.mkdir(parents=True, exist_ok=True)
        queue_module.Path(out).write_text(json.dumps(result))

    monkeypatch.setattr(queue_module.subprocess, "run", fake_subprocess)
    settings = queue_module.settings_here(queue[0].base, str(root), True, queue[0].overrides)
    assert settings == {"amp": False, "channels_last": False, "compile": True}
    assert queue_module.settings_here(queue[0].base, str(root), True) == settings and len(calls) == 1  # reused
    record = queue_module.read_probes()[queue_module.machine()]
    assert record["s_per_step"] == {"float32": 2.1, "float32 + compile": 1.0}
    assert record["choice"] == "float32 + compile"
    args = queue_module._train_arguments(queue[0], True, settings, progress=False)
    assert args == ["--resume", "--set", "train.amp=false", "--set", "train.channels_last=false",
                    "--set", "train.compile=true", "--no-progress"]  # fmt: skip


def test_the_curves_figure_draws_every_run_that_validated(tiny_queue, tmp_path):
    queue, root = tiny_queue
    with pytest.raises(ValueError, match="no run has validated"):  # nothing trained yet (not even the default)
        queue_module.draw_curves(queue, tmp_path / "none.png")
    assert queue_module.run_queue(queue[:1], None, str(root), run_probe=False) == 0
    path = queue_module.draw_curves(queue, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_run_killed_before_its_first_state_starts_again(tiny_queue):
    """A session that ended (or a NaN) before iteration `save_every` leaves a config and no state."""
    queue, root = tiny_queue
    first = queue[0]
    first.run.mkdir(parents=True)
    (first.run / "config.yaml").write_text(yaml.safe_dump(tiny_training_config(root)))
    assert queue_module.run_queue(queue[:1], None, str(root), run_probe=False) == 0
    assert first.finished


def test_the_flag_benchmarks_wait_on_is_held_while_training_and_left_alone_if_another_holds_it(tiny_queue):
    flag = campaign.TRAINING_FLAG
    with campaign.training_flag("one"):
        assert flag.read_text() == "one\n"
        with campaign.training_flag("two"):  # e.g. a test's queue inside a session's running queue
            pass
        assert flag.is_file()  # the inner one did not make it, so it did not remove it
    assert not flag.exists()


def test_a_model_whose_attention_ends_unused_is_a_record_not_a_bundled_model(tmp_path):
    """|gamma| under ccnet.analysis.UNUSED_GAMMA: the explorer would draw maps the model does not use."""
    from tests.test_app_helpers import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path, "quiet", recurrence=2, gamma=-0.02)
    assert queue_module.unbundled_reason(tmp_path / "quiet") == "attention unused: |gamma| = 0.02 < 0.1"
    save_tiny_checkpoint(tmp_path, "used", recurrence=2)  # gamma 0.5
    save_tiny_checkpoint(tmp_path, "baseline", recurrence=0)  # no attention: nothing to mislead
    assert queue_module.unbundled_reason(tmp_path / "used") is None
    assert queue_module.unbundled_reason(tmp_path / "baseline") is None


def test_no_bundled_model_has_an_unused_attention():
    bundled = sorted(queue_module.CHECKPOINTS.glob("*.safetensors"))
    assert bundled, "no bundled checkpoints found"
    reasons = {path.stem: queue_module.unbundled_reason(path.with_suffix("")) for path in bundled}
    assert {name: why for name, why in reasons.items() if why} == {}
