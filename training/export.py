"""Copy a run's checkpoint into a checkpoint folder (e.g. checkpoints/) and update that folder's index.

    python -m training.export runs/camvid_r2 checkpoints/camvid_r2 [--which best|last] [--half] [--default]

The copy is re-saved through `ccnet.checkpoint` (validated on the way; --half stores float16 weights)
and keeps the run's metadata, so the bundle says how it was trained.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ccnet.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    update_sidecar,
    write_index,
)

from .model_card import training_record

# Derived from the weights by save_checkpoint; everything else in the sidecar is carried over.
_DERIVED = (
    "format_version",
    "architecture",
    "model_config",
    "backbone",
    "recurrence",
    "num_classes",
    "weights_dtype",
)


def export_run(
    run_dir: str | Path,
    destination: str | Path,
    which: str = "best",
    half: bool = False,
    make_default: bool = False,
    backbone_from: str | Path | None = None,
) -> dict:
    """Save RUN/<which> (or RUN itself, a checkpoint stem such as a head's) as <destination>.safetensors/.json
    and rewrite the destination folder's index. `backbone_from`: a checkpoint beside the destination whose
    backbone this one shares (a head on the campaign's backbone; see ccnet.checkpoint.save_checkpoint)."""
    run_dir = Path(run_dir)
    is_run = (run_dir / which).with_suffix(".json").is_file()
    source = run_dir / which if is_run else run_dir
    if not source.with_suffix(".json").is_file():
        raise CheckpointError(
            f"no {which} checkpoint in {run_dir} (expected {source}.json): has the run validated yet?"
        )
    model, metadata = load_checkpoint(source, device="cpu")
    carried = {key: value for key, value in metadata.items() if key not in (*_DERIVED, "shared_backbone")}
    if is_run:
        carried["training"] = (metadata.get("training") or {}) | training_record(
            run_dir, metadata.get("step"), metadata.get("train_images")
        )
    weights, sidecar = save_checkpoint(model, destination, carried, half=half, backbone_from=backbone_from)
    name = weights.name[: -len(".safetensors")]
    index = write_index(weights.parent, default=name if make_default else None)
    print(f"exported {source} -> {weights} ({weights.stat().st_size / 1e6:.1f} MB); index default: {index['default']}")
    return index


def annotate(destination: str | Path, records: str | Path, train_images: int | None = None) -> dict:
    """Add (or refresh) the `training` record of a bundled sidecar from a run or results/ record folder.

    Only the sidecar's JSON changes (its save_id still names the same weights); the weights stay as they are.
    """
    metadata = read_metadata(destination)
    images = train_images or (metadata.get("training") or {}).get("train_images")
    record = (metadata.get("training") or {}) | training_record(records, metadata.get("step"), images)
    metadata = update_sidecar(destination, {"training": record})
    print(f"{destination}: training record {record}")
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", type=Path, help="training run folder (holds best.* and last.*), or a checkpoint stem (a head's)"
    )
    parser.add_argument("destination", type=Path, help="checkpoint stem to write, e.g. checkpoints/camvid_r2")
    parser.add_argument("--which", choices=["best", "last"], default="best", help="which checkpoint of the run")
    parser.add_argument("--half", action="store_true", help="store float16 weights (loaded back as float32)")
    parser.add_argument("--default", action="store_true", help="make it the folder index's default model")
    parser.add_argument(
        "--backbone-from",
        type=Path,
        help="a checkpoint in the destination folder whose backbone this model shares (heads): stored once",
    )
    parser.add_argument(
        "--annotate",
        action="store_true",
        help="only add the model card's training record to DESTINATION's sidecar, read from RUN_DIR "
        "(a run or a results/ record folder)",
    )
    parser.add_argument("--train-images", type=int, help="with --annotate: images in the train split")
    args = parser.parse_args(argv)
    try:
        if args.annotate:
            annotate(args.destination, args.run_dir, args.train_images)
            return 0
        export_run(args.run_dir, args.destination, args.which, args.half, args.default, args.backbone_from)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
