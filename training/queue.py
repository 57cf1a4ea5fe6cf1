"""The campaign queue: named end-to-end runs trained one after another across sessions and machines.

`training.campaign` trained one long run (the default `camvid_r2`). The queue
(training/configs/campaign_queue.yaml) trains the rest of the family the same way, with the same rules:

- It starts first thing in every session and pauses before the session stops (``--max-minutes``).
- Only the run in progress has a resume state in git (``campaign/<name>/state.pt.NNN``), replaced each session.
  A finished run keeps its curve, run record and ``finished.json``; its weights are exported (float16) as
  ``checkpoints/<name>``, except a second seed's (``seed_of``: a record of the seed spread, not a model to explore)
  and a model whose attention ends unused (|gamma| under ``ccnet.analysis.UNUSED_GAMMA``: its maps would mislead).
  So git grows by about one state (24 MB) plus one checkpoint (6 MB) per session.
- It resumes on a new machine from what is committed.
- Before training on a machine it has not seen, it measures the precision choices and torch.compile on the
  real config for a few dozen steps (`training.speed_probe`) and trains with the fastest. The probe lands in
  ``campaign/probes.json``; every start and resume records the machine and the choice in the run's run.json.

    python -m training.queue run --max-minutes 150 --no-progress > runs/queue.log 2>&1 &   # a session's start
    python -m training.queue status                                                        # where each run stands
    python -m training.queue save && git add campaign/ checkpoints/                        # before stopping
    python -m training.queue probe                                                         # re-measure this machine
    python -m training.queue curves                                 # docs/queue_curves.png: every run's val curve

Let ``--max-minutes`` end a session's share (the trainer saves its state as it pauses); a killed trainer loses at
most ``train.save_every`` iterations (25). `save` then copies whichever run is in progress into campaign/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .campaign import (
    FINISHED,
    _shown,
    finished_record,
    mark_finished,
    restore,
    run_trainer,
    save,
    saved_step,
    summary,
    training_flag,
)
from .run_folder import CONFIG_FILE

ROOT = Path(__file__).resolve().parents[1]
QUEUE_FILE = ROOT / "training" / "configs" / "campaign_queue.yaml"
SAVED_ROOT = ROOT / "campaign"  # committed
RUNS_ROOT = ROOT / "runs"  # git-ignored
CHECKPOINTS = ROOT / "checkpoints"
PROBES = SAVED_ROOT / "probes.json"  # committed: machine -> what the probe measured and chose
MIN_MINUTES = 3.0  # less than this left: not worth starting the next run (building it takes about a minute)


@dataclass(frozen=True)
class QueuedRun:
    name: str
    base: Path  # the YAML config every run of the queue shares
    overrides: tuple[str, ...]  # --set KEY=VALUE on top of it
    seed_of: str | None = None  # another seed of this bundled model: recorded (curve, finished.json), not bundled

    @property
    def saved(self) -> Path:
        return SAVED_ROOT / self.name

    @property
    def run(self) -> Path:
        return RUNS_ROOT / f"{self.name}_campaign"

    @property
    def finished(self) -> bool:
        return (self.saved / FINISHED).is_file()

    def iterations(self) -> int:
        """The schedule's length: the run's own saved config once it has started, else the queue's."""
        from .config import load_config

        for folder in (self.run, self.saved):
            if (folder / CONFIG_FILE).is_file():
                return int(yaml.safe_load((folder / CONFIG_FILE).read_text())["optim"]["iterations"])
        return load_config(self.base, list(self.overrides))["optim"]["iterations"]

    def step(self) -> int:
        return max(saved_step(self.saved) or 0, saved_step(self.run) or 0)


def _value(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def load_queue(path: Path | None = None) -> list[QueuedRun]:
    """The queue's runs, in order; refuses a malformed file with the reason."""
    path = path or QUEUE_FILE
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or "base" not in spec:
        raise ValueError(f"{path}: expected `base: CONFIG.yaml` and `runs: [{{name, set}}, ...]`")
    base = (path.parent / spec["base"]).resolve()
    runs, names = [], set()
    for entry in spec["runs"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not name or not str(name).replace("_", "").isalnum() or name in names:
            raise ValueError(f"{path}: every run needs a unique name of letters, digits and _ (got {entry!r})")
        names.add(name)
        overrides = tuple(f"{key}={_value(value)}" for key, value in (entry.get("set") or {}).items())
        seed_of = entry.get("seed_of")
        if seed_of is not None and not isinstance(seed_of, str):
            raise ValueError(f"{path}: `seed_of` of {name} must name a bundled model (got {seed_of!r})")
        if seed_of is not None and "seed" not in (entry.get("set") or {}):
            raise ValueError(f"{path}: {name} is another seed of {seed_of}: set its `seed` (e.g. `seed: 1`)")
        runs.append(QueuedRun(str(name), base, overrides, seed_of))
    return runs


# -- the probe --------------------------------------------------------------------------------------------------


def machine() -> str:
    """The probe's key: the device a trainer with train.device auto uses here (the GPU, else the CPU and flags)."""
    from .precision import describe_machine
    from .speed_probe import probe_device

    return describe_machine(probe_device())


def read_probes(path: Path | None = None) -> dict:
    path = path or PROBES  # read at call time (tests point PROBES elsewhere)
    return json.loads(path.read_text()) if path.is_file() else {}


def probe(base: Path, data_root: str | None, path: Path | None = None, overrides: tuple[str, ...] = (),
          variants: list[str] | None = None) -> dict:  # fmt: skip
    """Time every precision choice (and torch.compile) worth timing here, or just `variants`, on the queue's real
    config; record the fastest for this machine."""
    out = RUNS_ROOT / "probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "training.speed_probe", "--config", str(base), "--json", str(out),
               "--rounds", "2", "--steps", "4", "--warmup", "2"]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    if variants:
        command += ["--variants", *variants]
    if data_root:
        command += ["--data-root", str(data_root)]
    print("probing:", " ".join(command), file=sys.stderr)
    with training_flag("the queue's speed probe"):
        subprocess.run(command, cwd=ROOT, check=True)  # its own process: its trainers' memory goes with it
    result = json.loads(out.read_text())
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "s_per_step": {name: round(statistics.median(times), 3) for name, times in result["samples"].items()},
        "failed": result.get("failed", {}),
        "choice": result["choice"],
        "settings": result["settings"],
        "config": Path(base).name,
        "probed_with": list(overrides),
    }
    path = path or PROBES
    probes = read_probes(path) | {result["machine"]: record}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probes, indent=2) + "\n")
    return record


CONFIG_SETTINGS = {"amp": "auto", "channels_last": "auto", "compile": False}  # without a probe: decided per machine


def settings_here(base: Path, data_root: str | None, run_probe: bool, overrides: tuple[str, ...] = ()) -> dict:
    """The train.* settings the probe chose for this machine, probing first where it has not been measured; without
    a probe, the per-machine defaults (never the settings a previous machine chose, saved in the run's config)."""
    known = read_probes().get(machine())
    if known is None and run_probe:
        try:
            known = probe(base, data_root, overrides=overrides)
        except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as error:
            print(f"queue: the speed probe failed ({error}); training with {CONFIG_SETTINGS}", file=sys.stderr)
    return known["settings"] if known else dict(CONFIG_SETTINGS)


# -- running the queue --------------------------------------------------------------------------------------------


def current(queue: list[QueuedRun]) -> QueuedRun | None:
    """The first run whose schedule has not finished: the one the queue trains."""
    return next((entry for entry in queue if not entry.finished), None)


def complete(entry: QueuedRun, data_root: str | None = None) -> Path:
    """The schedule is over: export the last weights as checkpoints/<name> (float16) and drop the resume state.

    Another seed of a bundled model (`seed_of`) is a measurement of the seed spread, not a model to explore:
    its curve and finished.json are committed, its weights stay in runs/ (6 MB of git saved per seed)."""
    from .campaign import final_checkpoint
    from .export import export_run

    last = final_checkpoint(data_root, run=entry.run, saved=entry.saved)
    if entry.seed_of is not None:
        mark_finished(last, run=entry.run, saved=entry.saved, bundled=False)
        return entry.saved
    reason = unbundled_reason(last)
    if reason is not None:  # the explorer would show maps the model does not use: a record, not a model
        mark_finished(last, run=entry.run, saved=entry.saved, bundled=False, not_bundled_because=reason)
        return entry.saved
    destination = CHECKPOINTS / entry.name
    export_run(last.parent, destination, which="last", half=True)
    mark_finished(destination, run=entry.run, saved=entry.saved)
    return destination


def unbundled_reason(checkpoint: Path) -> str | None:
    """Why a finished model is not bundled for the explorer, or None: an attention whose |gamma| ends under
    ccnet.analysis.UNUSED_GAMMA barely reaches the output, so its maps would not be what the model uses."""
    from safetensors import safe_open

    from ccnet.analysis import UNUSED_GAMMA
    from ccnet.checkpoint import checkpoint_paths

    with safe_open(str(checkpoint_paths(checkpoint)[0]), "pt") as weights:
        gammas = [weights.get_tensor(key) for key in weights.keys() if key.endswith("cca.gamma")]
    if not gammas:
        return None  # R = 0: no attention to show
    gamma = max(float(g.abs().max()) for g in gammas)
    if gamma >= UNUSED_GAMMA:
        return None
    return f"attention unused: |gamma| = {gamma:.3g} < {UNUSED_GAMMA:g}"


def _train_arguments(entry: QueuedRun, started: bool, settings: dict, progress: bool) -> list[str]:
    arguments = ["--resume"] if started else ["--config", str(entry.base)]
    for override in [] if started else entry.overrides:
        arguments += ["--set", override]
    for key, value in settings.items():
        arguments += ["--set", f"train.{key}={_value(value)}"]
    return [*arguments, *([] if progress else ["--no-progress"])]


def run_queue(queue: list[QueuedRun], max_minutes: float | None, data_root: str | None = None,
              run_probe: bool = True, progress: bool = False) -> int:  # fmt: skip
    """Train the queue in order until it is done or the time is spent; 0 unless a trainer failed."""
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    while (entry := current(queue)) is not None:
        minutes = None if deadline is None else (deadline - time.monotonic()) / 60
        if minutes is not None and minutes < MIN_MINUTES:
            print(f"paused before more of {entry.name}: the time is spent", file=sys.stderr)
            return 0
        settings = settings_here(entry.base, data_root, run_probe, entry.overrides)
        if deadline is not None:  # the probe took some of the time
            minutes = (deadline - time.monotonic()) / 60
            if minutes < MIN_MINUTES:
                print(f"paused before more of {entry.name}: the probe spent the time", file=sys.stderr)
                return 0
        step = restore(entry.run, entry.saved)
        if step is None or step < entry.iterations():
            print(f"queue: {entry.name} from iteration {step or 0} with {settings}", file=sys.stderr)
            arguments = _train_arguments(entry, step is not None, settings, progress)
            if step is None and (entry.run / CONFIG_FILE).is_file():
                arguments.append("--overwrite")  # killed before its first saved state: start it again
            arguments += ["--data-root", str(data_root)] if data_root else []  # else the config's, or $CAMVID_ROOT
            code = run_trainer(arguments, minutes, entry.run, label=entry.name)
            if code != 0:
                print(f"queue: the trainer of {entry.name} failed (exit {code}); see its log", file=sys.stderr)
                return code
        if (saved_step(entry.run) or 0) < entry.iterations():
            return 0  # paused by --max-minutes
        print(f"queue: {entry.name} finished; its record (and weights unless a second seed) in "
              f"{_shown(complete(entry, data_root))}",
              file=sys.stderr)  # fmt: skip
    print("queue: every run is finished", file=sys.stderr)
    return 0


def save_current(queue: list[QueuedRun]) -> str:
    """Copy the run in progress into campaign/ (the only state committed); what was saved, in words."""
    entry = current(queue)
    if entry is None:
        return "every run is finished: nothing to save"
    if saved_step(entry.run) is None:
        return f"{entry.name} has no state in {entry.run}: nothing to save"
    return f"saved {entry.name} at iteration {save(entry.run, entry.saved)} into {_shown(entry.saved)}"


def status_rows(queue: list[QueuedRun]) -> list[dict]:
    """A row per run: its state, step, schedule, the last validation's mIoU, gamma and lift, and hours trained."""
    rows = []
    for entry in queue:
        folder = entry.saved if entry.finished else _curve_folder(entry.name)
        row = {"name": entry.name, "set": " ".join(entry.overrides), "iterations": entry.iterations()}
        if folder is None:
            rows.append(row | {"state": "waiting", "step": 0})
            continue
        status = summary(folder)
        last = status["validations"][-1] if status["validations"] else {}
        gammas = [value for key, value in last.items() if key.startswith("gamma")]
        rows.append(row | {
            "state": "finished" if entry.finished else "in progress",
            "step": (finished_record(entry.saved) or {}).get("step", entry.step()),
            "hours": round(status["hours"], 2),
            "val_step": last.get("step"),
            "mIoU": None if last.get("mIoU") is None else round(100 * last["mIoU"], 2),
            "gamma": round(gammas[0], 3) if gammas else None,
            "lift": None if last.get("lift") is None else round(last["lift"], 2),
        })  # fmt: skip
    return rows


def format_status(rows: list[dict]) -> str:
    lines = ["| run | state | step | val mIoU (at step) | gamma | lift | hours | set |", "|" + " --- |" * 8]
    for row in rows:
        val = "" if row.get("mIoU") is None else f"{row['mIoU']:.2f} ({row['val_step']})"
        gamma = "" if row.get("gamma") is None else f"{row['gamma']:.3f}"
        lift = "" if row.get("lift") is None else f"{row['lift']:.2f}"
        hours = "" if row.get("hours") is None else f"{row['hours']:.2f}"
        lines.append(f"| {row['name']} | {row['state']} | {row['step']}/{row['iterations']} | {val} | {gamma} | "
                     f"{lift} | {hours} | {row['set']} |")  # fmt: skip
    return "\n".join(lines)


CURVES = ROOT / "docs" / "queue_curves.png"
DEFAULT_CAMPAIGN = "camvid_r2"  # the default's own campaign (training.campaign), drawn beside the queue's runs


def _curve_folder(name: str) -> Path | None:
    """The folder holding a run's furthest learning curve: the committed one, or the local run ahead of it."""
    saved, run = SAVED_ROOT / name, RUNS_ROOT / f"{name}_campaign"
    folders = [f for f in (run, saved) if (f / CONFIG_FILE).is_file() and (f / "metrics.jsonl").is_file()]
    return max(folders, key=lambda f: summary(f)["step"]) if folders else None


def draw_curves(queue: list[QueuedRun], path: Path | None = None) -> Path:
    """Every run's val mIoU and same-class lift against iterations on one figure (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path or CURVES
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = 0
    for name in [DEFAULT_CAMPAIGN, *(entry.name for entry in queue)]:
        folder = _curve_folder(name)
        vals = summary(folder)["validations"] if folder is not None else []
        if not vals:
            continue
        steps = [v["step"] for v in vals]
        style = {"marker": ".", "linewidth": 2 if name == DEFAULT_CAMPAIGN else 1.2}
        left.plot(steps, [100 * v["mIoU"] for v in vals], label=name, **style)
        right.plot(steps, [v.get("lift") or float("nan") for v in vals], label=name, **style)
        drawn += 1
    if not drawn:
        raise ValueError("no run has validated yet: nothing to draw")
    left.set_xlabel("iteration (batch 8)")
    left.set_ylabel("val mIoU (%)")
    right.axhline(1, color="grey", linestyle=":", linewidth=1, label="blind to class")
    right.set_xlabel("iteration")
    right.set_ylabel("same-class lift (val)")
    for axis in (left, right):
        axis.legend(fontsize=7)
    figure.suptitle("The loop-count family trained end to end (CamVid val, single scale)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.queue", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["run", "save", "status", "probe", "curves"])
    parser.add_argument("--queue", type=Path, default=QUEUE_FILE, help="the queue's YAML (default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, help="`run`: pause (state saved) after this many minutes")
    parser.add_argument("--data-root", default=os.environ.get("CAMVID_ROOT"), help="CamVid root ($CAMVID_ROOT)")
    parser.add_argument("--no-probe", action="store_true",
                        help="`run`: on a machine not yet probed, train with the config's own settings")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument("--json", action="store_true", help="`status`: JSON instead of a table")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="`probe`: time only these (speed_probe's names), e.g. to re-check a fix")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        queue = load_queue(args.queue)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.action == "run":
        return run_queue(queue, args.max_minutes, args.data_root, not args.no_probe, not args.no_progress)
    if args.action == "save":
        print(save_current(queue))
        return 0
    if args.action == "curves":
        print(f"wrote {_shown(draw_curves(queue))}")
        return 0
    if args.action == "probe":
        entry = current(queue) or queue[0]
        record = probe(entry.base, args.data_root, overrides=entry.overrides, variants=args.variants)
        print(json.dumps(record, indent=2))
        return 0
    rows = status_rows(queue)
    print(json.dumps(rows, indent=2) if args.json else format_status(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
