"""The campaign: one long training run of the default model that spans sessions and machines.

A session trains in the background with a time limit (``--max-minutes``), saves the run's resumable state into
the repository (``campaign/<name>/``: config.yaml, run.json, metrics.jsonl and state.pt, replaced each time, so
git grows by one state per session), and the next session, on whatever machine it gets, restores it and goes on:

    python -m training.campaign start  --max-minutes 120   # first session only
    python -m training.campaign resume --max-minutes 120   # every later session (restores the state first)
    python -m training.campaign save                       # before the session stops: copy the state to commit
    python -m training.campaign status                     # where it stands: step, val mIoU, gamma, lift, hours
    python -m training.campaign interim                    # bundle the latest validated weights as the default
    python -m training.campaign finish --max-minutes 120   # after the schedule: bundle it, then every head
    python -m training.campaign curve                      # docs/campaign_curve.png: val mIoU, lift, Pole vs steps

`finish` is resumable too, step by step: export the run's last checkpoint as the default `checkpoints/camvid_r2`
(float16; the committed folder then keeps the final curve and ``finished.json`` instead of a resume state),
cache its backbone's features, train every head kind x 5 seeds (`training.heads`; each record lands in
results/camvid/heads/ and is skipped next time), then bundle each kind's seed-0 head beside the default,
sharing its backbone (`checkpoints/camvid_r0`, ..., `camvid_r2_paper`, `camvid_video_t5`, `camvid_video_t1`).

``state.pt`` is the trainer's own exact resume state (model, optimiser, RNG states, step, best score; it loads
with ``weights_only=True``). The best-on-val weights are not committed: the run's ``last`` checkpoint at the end
of the schedule is what gets exported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .model_card import training_hours
from .run_folder import CONFIG_FILE, METRICS_FILE, RUN_FILE, read_metrics
from .state import STATE_FILE, load_training_state

ROOT = Path(__file__).resolve().parents[1]
NAME = "camvid_r2"
CONFIG = ROOT / "training" / "configs" / "camvid_r2_campaign.yaml"
SAVED = ROOT / "campaign" / NAME  # committed
RUN = ROOT / "runs" / f"{NAME}_campaign"  # git-ignored working folder
FILES = (CONFIG_FILE, RUN_FILE, METRICS_FILE)  # copied as they are; the state goes in parts (below)
# The committed state is split into parts under 20 MB each (git hosts refuse or warn on larger files); the
# run folder holds it whole, as the trainer writes and reads it.
PART_BYTES = 15 * 2**20


def state_parts(folder: Path) -> list[Path]:
    """A committed folder's state parts, in order (state.pt.000, state.pt.001, ...)."""
    return sorted(folder.glob(f"{STATE_FILE}.[0-9][0-9][0-9]"))


def _state_bytes(folder: Path) -> bytes | None:
    if (folder / STATE_FILE).is_file():
        return (folder / STATE_FILE).read_bytes()
    parts = state_parts(folder)
    return b"".join(part.read_bytes() for part in parts) if parts else None


def saved_step(folder: Path) -> int | None:
    """The iteration a folder's state (whole, or in committed parts) has reached, or None without one."""
    data = _state_bytes(folder)
    return None if data is None else int(load_training_state(io.BytesIO(data))["step"])


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def save(run: Path | None = None, saved: Path | None = None) -> int:
    """Copy the run's resumable state into the committed folder; returns the step saved."""
    run, saved = run or RUN, saved or SAVED
    step = saved_step(run)
    if step is None:
        raise FileNotFoundError(f"{run} has no {STATE_FILE}: nothing to save (has the campaign started?)")
    previous = saved_step(saved)
    if previous is not None and previous > step:
        raise ValueError(f"{saved} holds step {previous}, ahead of {run} at {step}: not overwriting it")
    saved.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name == METRICS_FILE:  # the trainer may be writing its last line: copy complete lines only
            text = (run / name).read_text()
            _write_atomically(saved / name, text[: text.rfind("\n") + 1].encode())
        else:
            _write_atomically(saved / name, (run / name).read_bytes())
    data = (run / STATE_FILE).read_bytes()
    count = -(-len(data) // PART_BYTES)
    for index in range(count):
        _write_atomically(saved / f"{STATE_FILE}.{index:03d}", data[index * PART_BYTES : (index + 1) * PART_BYTES])
    for stale in [*state_parts(saved)[count:], saved / STATE_FILE]:  # fewer parts than before; a whole file
        stale.unlink(missing_ok=True)
    return step


def restore(run: Path | None = None, saved: Path | None = None) -> int | None:
    """Put the committed state into the run folder unless the run folder is already as far; the step restored."""
    run, saved = run or RUN, saved or SAVED
    step, local = saved_step(saved), saved_step(run)
    if step is None:
        return local  # nothing committed yet: the run folder (if any) goes on
    if local is not None and local >= step:
        return local
    run.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(saved / name, run / name)
    _write_atomically(run / STATE_FILE, _state_bytes(saved))
    for stale in ("last", "best"):  # checkpoints of the older local state: never exported by mistake
        for suffix in (".safetensors", ".json"):
            (run / f"{stale}{suffix}").unlink(missing_ok=True)
    return step


def summary(folder: Path) -> dict:
    """Step, schedule length, the validations so far and the hours spent training, from a campaign folder."""
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    records = read_metrics(folder) if (folder / METRICS_FILE).is_file() else []
    vals = [r for r in records if r["kind"] == "val"]
    trains = [r for r in records if r["kind"] == "train"]
    hours = training_hours(records)  # pauses between sessions left out
    return {
        "step": trains[-1]["step"] if trains else 0,
        "iterations": config["optim"]["iterations"],
        "hours": hours,
        "validations": [
            {k: v for k, v in r.items() if k in ("step", "mIoU", "lift", "per_class_iou") or k.startswith("gamma")}
            for r in vals
        ],
    }


CHECKPOINTS = ROOT / "checkpoints"
HEAD_RECORDS = ROOT / "results" / "camvid" / "heads"
HEAD_RUNS = ROOT / "runs" / "heads"
SEEDS = 5
# head kind -> its bundled name (seed 0), stored beside the default and sharing its backbone
INTERIM = f"{NAME}_campaign"  # the campaign's latest weights, bundled while it runs (`interim`)
BUNDLED_HEADS = {
    "r0": "camvid_r0",
    "r1": "camvid_r1",
    "r3": "camvid_r3",
    "r2_ccl": "camvid_r2_ccl",
    "r2_paper": "camvid_r2_paper",
    "video_t5": "camvid_video_t5",
    "video_t1": "camvid_video_t1",
}


def final_checkpoint(data_root=None, run: Path | None = None, saved: Path | None = None) -> Path:
    """RUN/last at the end of the schedule: the trainer's own, or (a fresh clone has only the committed state)
    written now from the restored state by one validation through the trainer."""
    from ccnet.checkpoint import read_metadata

    from .config import load_config
    from .train import Trainer

    run, saved = run or RUN, saved or SAVED
    restore(run, saved)
    state_step = saved_step(run)
    if state_step is None:
        raise ValueError(f"no campaign state in {saved} or {run}: start the campaign first")
    config = load_config(None, [yaml.safe_load((run / CONFIG_FILE).read_text())])
    if data_root is not None:
        config["data"]["root"] = str(data_root)
    total = config["optim"]["iterations"]
    if state_step < total:
        raise ValueError(f"the campaign is at iteration {state_step} of {total}: resume it before finishing")
    last = run / "last"
    if last.with_suffix(".json").is_file() and read_metadata(last).get("step") == total:
        return last
    trainer = Trainer(config, run, resume=True, show_progress=False)
    trainer.after_validation(trainer.validate())  # writes last (and best) for the final weights
    return last


def _head_done(kind: str, seed: int, backbone: str) -> bool:
    """A head counts as trained when its record is for this backbone and, for the bundled seed 0, its
    checkpoint is here too (records are committed, checkpoints are not)."""
    record = HEAD_RECORDS / f"{kind}_s{seed}.json"
    if not record.is_file() or json.loads(record.read_text()).get("backbone_save_id") != backbone:
        return False
    if seed != 0 or kind not in BUNDLED_HEADS:  # only seed 0 of a bundled kind needs its checkpoint too
        return True
    return (HEAD_RUNS / f"{kind}_s0_model.json").is_file() or _bundled(kind, backbone)


def _bundled(kind: str, backbone: str) -> bool:
    from ccnet.checkpoint import read_metadata

    stem = CHECKPOINTS / BUNDLED_HEADS[kind]
    if not stem.with_suffix(".json").is_file():
        return False
    return (read_metadata(stem).get("training") or {}).get("head_only_on") == backbone


def _default_is_final(default: Path, run_id: str, step: int) -> bool:
    """Whether the bundled default is this run's checkpoint at `step`."""
    from ccnet.checkpoint import read_metadata

    if not default.with_suffix(".json").is_file():
        return False
    bundled = read_metadata(default)
    return (bundled.get("training") or {}).get("run_id") == run_id and bundled.get("step") == step


def interim() -> Path:
    """Bundle the run's latest validated weights as `camvid_r2_campaign`, the default, before the schedule ends
    (its card says it is interim). The models measured in results/ stay as they are, so the report, the
    ablation and the atlas pages still describe the checkpoints they name; `finish` removes it."""
    from .export import export_run

    last = RUN / "last"
    if not last.with_suffix(".json").is_file():
        raise FileNotFoundError(f"{last}.json is missing: resume the campaign until it has validated once")
    export_run(RUN, CHECKPOINTS / INTERIM, which="last", half=True, make_default=True)
    return CHECKPOINTS / INTERIM


def _drop_interim() -> None:
    from ccnet.checkpoint import write_index

    for suffix in (".safetensors", ".json"):
        (CHECKPOINTS / f"{INTERIM}{suffix}").unlink(missing_ok=True)
    write_index(CHECKPOINTS)


FINISHED = "finished.json"  # in the committed folder once the schedule has ended and the default is exported


def finished_record(saved: Path | None = None) -> dict | None:
    """What the committed folder says about the finished campaign (run, step, bundled checkpoint), or None."""
    path = (saved or SAVED) / FINISHED
    return json.loads(path.read_text()) if path.is_file() else None


def mark_finished(default: Path, run: Path | None = None, saved: Path | None = None, bundled: bool = True,
                  not_bundled_because: str | None = None) -> None:
    """The schedule is over and its weights are bundled as `default` (or, `bundled` False, left in the run folder
    as `default`, `not_bundled_because` saying why): commit the final curve and a record, and drop the resume
    state (24 MB that nothing needs any more; git keeps the earlier ones)."""
    from ccnet.checkpoint import read_metadata

    run, saved = run or RUN, saved or SAVED
    metadata = read_metadata(default)
    saved.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        _write_atomically(saved / name, (run / name).read_bytes())
    record = {"run_id": json.loads((run / RUN_FILE).read_text())["run_id"], "step": metadata["step"],
              "checkpoint": default.name if bundled else None, "save_id": metadata.get("save_id")}  # fmt: skip
    if not bundled and not_bundled_because:
        record["not_bundled_because"] = not_bundled_because
    _write_atomically(saved / FINISHED, (json.dumps(record, indent=2) + "\n").encode())
    for part in [*state_parts(saved), saved / STATE_FILE]:
        part.unlink(missing_ok=True)


def finish(max_minutes: float | None, data_root=None, seeds: int = SEEDS, iterations: int | None = None) -> bool:
    """Bundle the finished campaign and train and bundle the heads; True once everything is done."""
    from ccnet.checkpoint import read_metadata

    from .export import export_run
    from .feature_cache import cache_features
    from .heads import DEFAULTS, KINDS, train_head

    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    default = CHECKPOINTS / NAME
    done = finished_record()
    if done is None:
        last = final_checkpoint(data_root)
        run_id = json.loads((RUN / RUN_FILE).read_text())["run_id"]
        if not _default_is_final(default, run_id, read_metadata(last)["step"]):
            export_run(last.parent, default, which="last", half=True, make_default=True)
        mark_finished(default)
    elif read_metadata(default).get("save_id") != done["save_id"]:  # heads must all sit on the campaign's weights
        raise ValueError(
            f"{default} (save {read_metadata(default).get('save_id')}) is not the campaign's final export (save "
            f"{done['save_id']}, {SAVED / FINISHED}): restore checkpoints/{NAME} from git before training heads"
        )
    _drop_interim()
    features = cache_features(default, data_root)
    backbone = read_metadata(default)["save_id"]
    HEAD_RECORDS.mkdir(parents=True, exist_ok=True)
    for seed in range(seeds):
        for kind in KINDS:
            if not _head_done(kind, seed, backbone):
                if deadline is not None and time.monotonic() > deadline:
                    print(f"paused before head {kind} seed {seed}: run `finish` again", file=sys.stderr)
                    return False
                train_head(features, kind, seed, HEAD_RUNS, iterations or DEFAULTS["iterations"], show_progress=False)
                shutil.copy2(HEAD_RUNS / f"{kind}_s{seed}.json", HEAD_RECORDS / f"{kind}_s{seed}.json")
            if seed == 0 and kind in BUNDLED_HEADS and not _bundled(kind, backbone):  # the app gets it at once
                export_run(HEAD_RUNS / f"{kind}_s0_model", CHECKPOINTS / BUNDLED_HEADS[kind], half=True,
                           backbone_from=default)  # fmt: skip
    return True


CURVE = ROOT / "docs" / "campaign_curve.png"


def draw_curve(folder: Path, path: Path) -> Path:
    """val mIoU, the thin classes' IoU and the same-class lift against iterations (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    status = summary(folder)
    vals = status["validations"]
    if not vals:
        raise ValueError(f"{folder} has no validation yet: nothing to draw")
    steps = [v["step"] for v in vals]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(steps, [100 * v["mIoU"] for v in vals], marker="o", label="val mIoU", color="black")
    for name, colour in (("Pole", "tab:orange"), ("SignSymbol", "tab:red"), ("Pedestrian", "tab:purple")):
        values = [100 * (v.get("per_class_iou", {}).get(name) or 0) for v in vals]
        left.plot(steps, values, marker=".", label=f"{name} IoU", color=colour, linewidth=1)
    left.axhline(68, color="grey", linestyle="--", linewidth=1, label="goal: mIoU 68")
    left.axhline(20, color="grey", linestyle=":", linewidth=1, label="goal: every class 20")
    left.set_xlim(0, status["iterations"])
    left.set_xlabel(f"iteration (schedule: {status['iterations']}, batch 8)")
    left.set_ylabel("%")
    left.legend(fontsize=7)
    right.plot(steps, [v.get("lift") or 0 for v in vals], marker="o", color="tab:blue", label="same-class lift (val)")
    right.axhline(3, color="grey", linestyle="--", linewidth=1, label="goal: lift 3")
    right.axhline(1, color="grey", linestyle=":", linewidth=1, label="blind to class")
    right.set_xlim(0, status["iterations"])
    right.set_xlabel("iteration")
    right.legend(fontsize=7)
    hours, step = status["hours"], status["step"]
    figure.suptitle(f"The campaign (CamVid val, R = 2): {hours:.1f} h of training to iteration {step}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _shown(path: Path) -> str:
    """A path as a user types it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _latest_folder() -> Path:
    """The folder with the furthest curve: the committed one once finished, else whichever state is ahead."""
    if finished_record() is not None:
        return SAVED
    return RUN if (saved_step(RUN) or 0) >= (saved_step(SAVED) or 0) else SAVED


TRAINING_FLAG = ROOT / "runs" / "TRAINING_RUNNING"  # benchmarks wait while it exists (benchmarks/common.py)


@contextlib.contextmanager
def training_flag(label: str):
    """Hold the flag that benchmarks wait on ($CCNET_PAUSE_FILE) while heavy work runs; removed only by its maker."""
    flag = TRAINING_FLAG
    created = not flag.exists()
    if created:
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(f"{label}\n")
    try:
        yield
    finally:
        if created:
            flag.unlink(missing_ok=True)


def run_trainer(arguments: list[str], max_minutes: float | None, run: Path | None = None, label: str = NAME) -> int:
    """`python -m training.train --out RUN ARGUMENTS` while the flag that benchmarks wait on exists."""
    run = run or RUN
    command = [sys.executable, "-m", "training.train", "--out", _shown(run), *arguments]
    if max_minutes:
        command += ["--max-minutes", str(max_minutes)]
    print("running:", " ".join(command), file=sys.stderr)
    with training_flag(f"{label} campaign"):
        return subprocess.call(command, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "resume", "save", "status", "interim", "finish", "curve"])
    parser.add_argument("--data-root", help="CamVid root for `finish` ($CAMVID_ROOT)")
    parser.add_argument("--max-minutes", type=float, help="pause (state saved) after this many minutes of training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    args = parser.parse_args(argv)
    extra = ["--no-progress"] if args.no_progress else []
    done = finished_record()
    if done is not None and args.action in ("start", "resume", "save", "interim"):
        print(f"error: the campaign finished at iteration {done['step']} and is bundled as "
              f"checkpoints/{done['checkpoint']}: `finish` trains the heads on it. To train a new campaign, delete "
              f"{_shown(SAVED / FINISHED)} (and {_shown(RUN)}/) first", file=sys.stderr)  # fmt: skip
        return 2
    if args.action == "start":
        if saved_step(SAVED) is not None or saved_step(RUN) is not None:
            print(f"error: the campaign has started already: use `resume` ({SAVED} or {RUN} holds a state)")
            return 2
        return run_trainer(["--config", str(CONFIG.relative_to(ROOT)), *extra], args.max_minutes)
    if args.action == "resume":
        step = restore()
        if step is None:
            print(f"error: no campaign state in {SAVED} or {RUN}: use `start`", file=sys.stderr)
            return 2
        print(f"resuming the campaign at iteration {step}", file=sys.stderr)
        return run_trainer(["--resume", *extra], args.max_minutes)
    if args.action == "finish":
        done = finish(args.max_minutes, args.data_root)
        print("campaign bundled, every head trained and bundled" if done else "finish paused: run it again")
        return 0
    if args.action == "interim":
        print(f"bundled {interim().relative_to(ROOT)} as the default (interim; `finish` replaces it)")
        return 0
    if args.action == "curve":
        folder = _latest_folder()
        print(f"wrote {draw_curve(folder, CURVE)}")
        return 0
    if args.action == "save":
        print(f"saved iteration {save()} into {SAVED.relative_to(ROOT)}: commit it")
        return 0
    folder = _latest_folder()
    if not (folder / CONFIG_FILE).is_file():
        print("the campaign has not started")
        return 0
    print(json.dumps(summary(folder), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
