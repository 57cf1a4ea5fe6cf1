"""The bundled models: inference latency at 360x480 and training images per second.

Runs only when ``checkpoints/index.json`` exists (the checkpoints the app serves); otherwise it
reports that the section is pending. For each model of the index, in a fresh process:
  inference   ``model(images)`` under ``torch.no_grad`` in eval mode on one 1x3x360x480 image
              (CamVid's size); minimum and median of --rounds after one warm-up
  training    one SGD step (forward, cross-entropy on the logits + 0.4 x on the auxiliary logits,
              backward, step) on a random batch of --train-batch crops of the trained ``input_size``;
              images per second = batch / minimum step time
Both on random inputs: speed does not depend on the image content.

    python benchmarks/bench_models.py
    python benchmarks/bench_models.py --checkpoints path/to/checkpoints --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common
import torch
import torch.nn.functional as F

DEFAULT_FOLDER = common.REPO_ROOT / "checkpoints"
INFER_SIZE = (360, 480)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoints", default=str(DEFAULT_FOLDER), help="folder with index.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def index_entries(folder: Path) -> list[dict] | None:
    """The index's model entries, or None when the folder has no index.json."""
    path = folder / "index.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("models", [])


def worker(spec: dict) -> dict:
    from ccnet.checkpoint import load_checkpoint

    device = spec["device"]
    model, metadata = load_checkpoint(spec["path"], device=device)
    result = {key: metadata.get(key) for key in ("recurrence", "dataset", "backbone")}
    images = torch.randn(1, 3, *INFER_SIZE, device=device)
    model.eval()

    def infer():
        with torch.no_grad():
            model(images)

    common.wait_until_quiet(log=lambda m: print(m, file=sys.stderr))
    timing = common.time_interleaved({"infer": infer}, spec["rounds"], device)["infer"]
    result.update(infer_ms=timing["min"] * 1e3, infer_median_ms=timing["median"] * 1e3)
    result.update(_training_speed(model, metadata, spec))
    return result


def _training_speed(model, metadata: dict, spec: dict) -> dict:
    device, batch = spec["device"], spec["train_batch"]
    height, width = metadata.get("input_size") or INFER_SIZE
    classes = metadata.get("num_classes") or model.config["num_classes"]
    images = torch.randn(batch, 3, height, width, device=device)
    labels = torch.randint(0, classes, (batch, height, width), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        loss = F.cross_entropy(output.logits, labels)
        if output.aux_logits is not None:
            loss = loss + 0.4 * F.cross_entropy(output.aux_logits, labels)
        loss.backward()
        optimizer.step()

    timing = common.time_interleaved({"train": train_step}, max(2, spec["rounds"] // 2), device)["train"]
    return {"train_crop": [height, width], "train_batch": batch, "train_images_per_s": batch / timing["min"]}


def run(args, log=print) -> dict:
    folder = Path(args.checkpoints)
    entries = index_entries(folder)
    result = {"folder": str(folder), "machine": common.describe_machine(args.device), "args": vars(args)}
    if entries is None:
        return {**result, "pending": True}
    rows = []
    for entry in entries:
        spec = dict(path=str(folder / entry["file"]), rounds=args.rounds, train_batch=args.train_batch,
                    device=args.device)
        row = {"name": entry.get("name", entry["file"]), **common.run_worker(Path(__file__), spec)}
        log(json.dumps(row))
        rows.append(row)
    return {**result, "rows": rows, "load": common.load_note()}


def format_table(result: dict) -> str:
    if result.get("pending"):
        return (f"_Pending: no `{Path(result['folder']).name}/index.json` yet. Once the trained checkpoints "
                "exist, `python benchmarks/run_all.py` fills this section (inference latency at 360x480 and "
                "training images/s of every bundled model)._")
    lines = [
        f"{result['machine']}; load: {result['load']}. Inference: batch 1, 360x480, eval, no_grad, minimum "
        f"(median) of {result['args']['rounds']}. Training: one SGD step (cross-entropy + 0.4 x auxiliary) "
        "on random crops of the trained size; images/s from the minimum step time.",
        "",
        "| model | backbone | dataset | R | inference 360x480 (ms) | training crop x batch | training images/s |",
        "| --- | --- | --- | ---: | ---: | --- | ---: |",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['name']} | failed: {row['error']} | | | | | |")
            continue
        crop = f"{row['train_crop'][0]}x{row['train_crop'][1]} x {row['train_batch']}"
        lines.append(
            f"| {row['name']} | {row.get('backbone') or '-'} | {row.get('dataset') or '-'} "
            f"| {row.get('recurrence', '-')} "
            f"| {row['infer_ms']:.0f} ({row['infer_median_ms']:.0f}) | {crop} | {row['train_images_per_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    common.worker_or_table_main(parse_args(argv), worker, run, format_table)


if __name__ == "__main__":
    main()
