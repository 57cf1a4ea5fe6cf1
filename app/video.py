"""The video page: click a pixel in one frame of a clip and see its influence in every frame, at R = 1, 2, 3.

A video model (``ccnet.video_model``) attends along each position's row, its column and its own position in
the other T - 1 frames; with more loops the influence of a pixel crosses frames and space. The page shows,
for the clicked position, a grid of influence maps (one row per frame, one column per R, one colour scale),
the share of the influence that comes from the clicked frame at each R beside the same share for a uniform
attention (``ccnet.propagation_3d``), and each frame's segmentation. Clips come from the examples folder (a
frame and its neighbours in its sequence: ``ccnet.sequences``), from T uploaded frames ordered by name, or from
T frames of an uploaded video file, a stride apart from a start time (``app.video_files``).
Shared pieces (the clickable image, the browser-coloured charts, decoding, colour scales) are the explorer's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import render
from app.clickable_image import clickable_image
from app.controls import FRAME_SCALES, ViewOptions
from app.display import colour_scale, shown_map
from app.examples import ExampleSet, load_example
from app.grid import display_to_image, pixel_to_cell, sample_at_cells
from app.images import UPLOAD_EXTENSIONS, DecodedImage, ImageError, decode_image, shown_name
from app.influence_chart import chart_args, influence_chart, photo_url
from app.models import LOOP_COUNTS, LoadedModel, ModelError, read_catalogue, resolve_device
from app.render import COLORMAPS
from app.resources import cached_examples, cached_model, shared_cache
from app.settings import Settings, SettingsError
from app.shareable import VIDEO_URL_POINT_KEY, keep_if_valid, restore_video_from_url, write_video_to_url
from app.video_files import (
    DEFAULT_STRIDE,
    VIDEO_EXTENSIONS,
    VideoFileError,
    VideoInfo,
    frame_indices,
    probe_video,
    read_frames,
)
from ccnet.backbones import BackboneFeatures
from ccnet.preprocess import normalize_image
from ccnet.propagation_3d import frame_shares, influence_maps_3d, temporal_share, uniform_attention_3d
from ccnet.sequences import CAMVID_ORDER, centred_windows, clip_plan

POINT_KEY = "video_point"  # session state: {"digest", "frame", "px", "py"}
FRAME_KEY = "video_frame"  # which frame of the clip is clicked
HOW_TO_TRAIN = (
    "No video model in the checkpoint folder. Train one on a backbone's cached features:\n\n"
    "```bash\npython -m training.feature_cache checkpoints/camvid_r2 --data-root $CAMVID_ROOT\n"
    "python -m training.heads ~/.cache/ccnet/features/<save_id> --kind video_t5 --out runs/heads\n"
    "python -m training.export runs/heads/video_t5_s0_model checkpoints/camvid_video_t5  # then refresh the index\n```"
)


class ClipError(ValueError):
    """A clip the page cannot use; the message says what to do."""


@dataclass
class Clip:
    frames: list[DecodedImage]  # T frames of one size
    names: list[str]
    labels: list[np.ndarray] | None  # (H, W) per frame, when every frame has ground truth
    class_names: list[str] | None

    @property
    def digest(self) -> str:
        return hashlib.blake2b("|".join(f.digest for f in self.frames).encode(), digest_size=8).hexdigest()

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].height, self.frames[0].width


@dataclass
class ClipDecode:
    """One model's pass over a clip: the attention of every loop up to the largest R shown (loop r's attention
    does not depend on how many loops follow, so R = 1 and 2 read the first r of them) and the segmentation at
    the model's trained R."""

    predictions: np.ndarray  # (T, H, W) class indices at the trained R
    attentions: list[torch.Tensor]  # max R x (T, h, w, T + h + w)
    trained: int

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.attentions[0].shape[1:3])

    @property
    def nbytes(self) -> int:
        return self.predictions.nbytes + sum(a.numel() * a.element_size() for a in self.attentions)


def check_frames(frames: list[DecodedImage], names: list[str], needed: int) -> None:
    """Raise ClipError for a clip of the wrong length or of frames of different sizes."""
    if len(frames) < needed:
        missing = needed - len(frames)
        raise ClipError(f"This model takes clips of {needed} frames; {len(frames)} given. Add {missing}.")
    if len(frames) > needed:
        extra = len(frames) - needed
        raise ClipError(f"This model takes clips of {needed} frames; {len(frames)} given. Remove {extra}.")
    sizes = {(f.width, f.height) for f in frames}
    if len(sizes) > 1:
        listed = ", ".join(f"{n}: {f.width} x {f.height}" for n, f in zip(names, frames, strict=True))
        raise ClipError(f"The frames of a clip must share one size; these differ ({listed}).")


def clip_from_uploads(files: list[tuple[str, bytes]], needed: int, max_side: int) -> Clip:
    """T uploaded frames, ordered by file name; a file that cannot be read is named in the error."""
    ordered = sorted(files, key=lambda item: item[0])
    frames = []
    for name, data in ordered:
        try:
            frames.append(decode_image(data, max_side=max_side, name=name))
        except ImageError as error:
            raise ClipError(f"{error} Replace that file: the clip needs all {needed} frames.") from error
    names = [name for name, _ in ordered]
    check_frames(frames, names, needed)
    return Clip(frames, names, None, None)


def clip_from_example(example_set: ExampleSet, index: int, needed: int, max_side: int) -> Clip:
    """The example at `index` and its neighbours in its sequence (same split), centred on it where possible."""
    example = example_set.examples[index]
    split = [i for i, e in enumerate(example_set.examples) if e.split == example.split]
    spec = (example_set.spec_by_split or {}).get(example.split)
    order = spec.frame_order if spec is not None and spec.frame_order else CAMVID_ORDER
    try:
        plan = clip_plan([example_set.examples[i].image.name for i in split], needed, order)
    except ValueError as error:
        raise ClipError(f"The examples' file names give no frame order: {error}") from error
    for clip, position in centred_windows(plan):
        if split[clip[position]] == index:
            loaded = [load_example(example_set, example_set.examples[split[i]], max_side) for i in clip]
            frames = [item.image for item in loaded]
            names = [example_set.examples[split[i]].name for i in clip]
            check_frames(frames, names, needed)
            labels = [item.labels for item in loaded]
            complete = all(label is not None for label in labels)
            return Clip(frames, names, labels if complete else None, loaded[0].class_names if complete else None)
    raise ClipError(
        f"{example.name}'s sequence has fewer than {needed} labelled frames: pick a frame of another sequence."
    )


FRAME_FEATURES = "video-frame"  # shared-cache key prefix: one frame's backbone features under one model save


def _feature_bytes(features: BackboneFeatures) -> int:
    return sum(t.numel() * t.element_size() for t in features if t is not None)


def _frame_features(features: BackboneFeatures, index: int) -> BackboneFeatures:
    """Frame `index` of a batch of features, copied (a view would keep the whole batch alive in the cache)."""
    return BackboneFeatures(*(None if t is None else t[index : index + 1].clone() for t in features))


@torch.inference_mode()
def encode_clip(loaded: LoadedModel, clip: Clip, cache=None) -> BackboneFeatures:
    """The backbone's features of every frame of the clip (T, ...); with `cache`, frames seen before (stepping
    along a sequence shares T - 1 frames with the previous clip) are taken from it and only the others run."""
    keys = [(FRAME_FEATURES, frame.digest, loaded.cache_id) for frame in clip.frames]
    found = [None if cache is None else cache.get(key) for key in keys]
    missing = [i for i, features in enumerate(found) if features is None]
    if missing:
        metadata = loaded.metadata
        images = torch.stack([normalize_image(clip.frames[i].rgb, metadata["mean"], metadata["std"]) for i in missing])
        # (n, 3, H, W) stored channels-last: float32 convolutions take oneDNN's faster path (the backbone on 5
        # frames 1.63 s -> 0.97 s here, benchmarks/bench_video.py), with the same float32 arithmetic.
        images = images.to(loaded.device).contiguous(memory_format=torch.channels_last)
        with loaded.lock:
            computed = loaded.model.encode(images)
        for position, i in enumerate(missing):
            found[i] = _frame_features(computed, position)
            if cache is not None:
                cache.put(keys[i], found[i], _feature_bytes(found[i]))
    return BackboneFeatures(*(None if parts[0] is None else torch.cat(parts) for parts in zip(*found, strict=True)))


@torch.inference_mode()
def decode_clip(loaded: LoadedModel, clip: Clip, loops: int = max(LOOP_COUNTS), cache=None) -> ClipDecode:
    """The backbone once per frame (not again for frames `cache` holds), the head once at `loops` (and once more
    at the trained R if it differs)."""
    trained = max(loaded.trained_recurrence, 0)
    features = encode_clip(loaded, clip, cache)
    with loaded.lock:
        output = loaded.model.decode(features, clip.size, recurrence=loops, return_attention=True)
        if trained != loops:
            output = output._replace(logits=loaded.model.decode(features, clip.size, recurrence=trained).logits)
    predictions = output.logits.argmax(dim=1).to(torch.uint8).cpu().numpy()  # (T, H, W)
    attentions = [a[0].float().cpu() for a in output.attentions]  # loops x (T, h, w, T+h+w)
    return ClipDecode(predictions, attentions, trained)


def cached_clip_decode(loaded: LoadedModel, clip: Clip, cache) -> ClipDecode:
    """decode_clip once per (clip, model save): a click only composes maps (the explorer's shared cache); a new
    clip runs the backbone only on the frames the cache does not hold."""
    key = ("video", clip.digest, loaded.cache_id)
    decode = cache.get(key)
    if decode is None:
        decode = decode_clip(loaded, clip, cache=cache)
        cache.put(key, decode, decode.nbytes)
    return decode


@dataclass
class ClipMaps:
    maps: dict[int, np.ndarray]  # R -> (T, h, w): the influence on the clicked position after R loops
    share: dict[int, float]  # R -> share of that influence from the clicked frame
    uniform_share: dict[int, float]  # R -> the same for a uniform attention
    frame_share: dict[int, np.ndarray] | None = None  # R -> (T,) share of the influence in each frame
    uniform_frame_share: dict[int, np.ndarray] | None = None  # R -> (T,) the same for a uniform attention


def clip_maps(decode: ClipDecode, frame: int, cell: tuple[int, int], mode: str, gamma: float) -> ClipMaps:
    """The influence on (frame, cell) after 1, 2, ... loops, and its temporal shares against a uniform attention
    run the same way."""
    composed = influence_maps_3d(decode.attentions, frame, *cell, mode=mode, gammas=gamma)  # (R, T, h, w)
    t, h, w = composed.shape[1:]
    uniform = [uniform_attention_3d(t, h, w)] * len(decode.attentions)
    flat = influence_maps_3d(uniform, frame, *cell, mode=mode, gammas=gamma)  # (R, T, h, w)
    shares, uniform_shares = temporal_share(composed, frame), temporal_share(flat, frame)
    per_frame, uniform_per_frame = frame_shares(composed), frame_shares(flat)  # (R, T) each
    loops = range(1, len(decode.attentions) + 1)
    return ClipMaps(
        maps={r: composed[r - 1].numpy() for r in loops},
        share={r: float(shares[r - 1]) for r in loops},
        uniform_share={r: float(uniform_shares[r - 1]) for r in loops},
        frame_share={r: per_frame[r - 1].numpy() for r in loops},
        uniform_frame_share={r: uniform_per_frame[r - 1].numpy() for r in loops},
    )


EACH_FRAME, ONE_SCALE = FRAME_SCALES
FRAME_SCALE_KEY = "video_scale"


def _options() -> ViewOptions:
    sidebar = st.sidebar
    sidebar.subheader("Display")
    sidebar.radio(
        "Colour scale",
        [EACH_FRAME, ONE_SCALE],
        key=FRAME_SCALE_KEY,
        help="The clicked frame holds most of the influence, so on one scale the other frames look blank. "
        "Each frame's own scale shows where in that frame the influence goes; its share is written beside it.",
    )
    mode = sidebar.radio(
        "Influence",
        ["attention", "rollout"],
        key="video_mode",
        horizontal=True,
        help="attention: the attention alone; rollout: with the residual path (|γ| A + I).",
    )
    colormap = sidebar.selectbox("Colour map", list(COLORMAPS), key="video_colormap")
    opacity = sidebar.slider("Heatmap opacity", 0.0, 1.0, 0.65, 0.05, key="video_opacity")
    log = sidebar.checkbox("Log scale", key="video_log", help="Four decades below the largest value.")
    return ViewOptions(mode=mode, per_loop=False, colormap=colormap, heat_opacity=opacity, seg_opacity=0.55,
                       smooth=False, shared_scale=True, scale_mode="log" if log else "linear")  # fmt: skip


def _choose_clip(settings: Settings, needed: int) -> Clip | None:
    st.sidebar.header("Clip")
    sources = ["Examples folder", "Upload frames", "Video file"]
    source = st.sidebar.radio("Source", sources, key="video_source", horizontal=True)
    if source == "Video file":
        return _clip_from_video_file(settings, needed)
    if source == "Upload frames":
        uploads = st.sidebar.file_uploader(f"{needed} frames", type=UPLOAD_EXTENSIONS, accept_multiple_files=True,
                                           key="video_upload")  # fmt: skip
        st.sidebar.caption(f"Upload {needed} consecutive frames; they are ordered by file name.")
        if not uploads:
            st.info(f"Upload {needed} consecutive frames of one video in the sidebar (ordered by file name).")
            return None
        return clip_from_uploads([(u.name, u.getvalue()) for u in uploads], needed, settings.max_side)
    examples = cached_examples(str(settings.examples) if settings.examples else None)
    if not examples.examples:
        st.info(examples.message)
        return None
    names = [e.name for e in examples.examples]
    keep_if_valid("video_example", names)
    name = st.sidebar.selectbox(
        "Frame", names, key="video_example", help=f"The frame and its neighbours in its sequence: a clip of {needed}."
    )
    return clip_from_example(examples, names.index(name), needed, settings.max_side)


def _clip_from_video_file(settings: Settings, needed: int) -> Clip | None:
    """T frames of an uploaded video, a stride apart from a start time (both chosen in the sidebar)."""
    upload = st.sidebar.file_uploader("Video file", type=VIDEO_EXTENSIONS, key="video_file")
    if upload is None:
        st.info(f"Upload a video ({', '.join(VIDEO_EXTENSIONS)}) in the sidebar: the clip is {needed} of its frames, "
                "a stride apart from a start time.")  # fmt: skip
        return None
    data = upload.getvalue()
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()  # the caches' key: same bytes, same frames
    try:
        info = _cached_video_info(digest, upload.name, data)
        start, stride = _video_sampling(info, digest)
        frames = _cached_video_frames(digest, start, stride, needed, settings.max_side, upload.name, data)
        indices = frame_indices(info, start, stride, needed, upload.name)
    except VideoFileError as error:
        raise ClipError(str(error)) from error
    names = [f"{shown_name(upload.name)} @ {info.frame_time(i):.1f} s (frame {i})" for i in indices]
    check_frames(frames, names, needed)
    return Clip(frames, names, None, None)


def _video_sampling(info: VideoInfo, digest: str) -> tuple[float, int]:
    """The start time (bounded by the video's length; a new file starts at 0) and the stride, from the sidebar."""
    st.sidebar.caption(f"{info.width} x {info.height}, {info.fps:.3g} fps, {info.duration:.1f} s "
                       f"({info.frame_count} frames), codec {info.codec}.")  # fmt: skip
    last = max(0.0, int(info.frame_time(info.frame_count - 1) * 10) / 10)  # the last frame's time, rounded down
    start = st.sidebar.number_input("Start time (s)", 0.0, last, 0.0, 0.1, format="%.1f", key=f"video_start-{digest}")
    stride = st.sidebar.number_input("Frame stride", min_value=1, value=DEFAULT_STRIDE, step=1, key="video_stride",
                                     help="Video frames between two frames of the clip.")  # fmt: skip
    st.sidebar.caption(
        "30 video frames is CamVid's labelled spacing (its ground-truth frames are 1 s apart at 30 fps)."
    )
    return float(start), int(stride)


@st.cache_data(max_entries=32, show_spinner=False)
def _cached_video_info(digest: str, _name: str, _data: bytes) -> VideoInfo:
    """probe_video once per file content (`_`-arguments are not hashed: `digest` stands for them)."""
    return probe_video(_data, _name)


@st.cache_data(max_entries=16, show_spinner="Reading the clip's frames from the video...")
def _cached_video_frames(digest: str, start: float, stride: int, count: int, max_side: int, _name: str,
                         _data: bytes) -> list[DecodedImage]:  # fmt: skip
    """read_frames once per (file, start, stride, T, max_side): going back to an earlier start seeks nothing."""
    return read_frames(_data, _name, start, stride, count, max_side)


def _remember_click(widget_key: str, clip: Clip, frame: int) -> None:
    value = st.session_state.get(widget_key)
    if not value or "x" not in value:
        return
    px, py = display_to_image(value["x"], value["y"], (value["width"], value["height"]), clip.size)
    st.session_state[POINT_KEY] = {"digest": clip.digest, "frame": frame, "px": px, "py": py}


def _move_to_frame(clip: Clip, radio_key: str) -> None:
    _, px, py = _current_point(clip)
    st.session_state[POINT_KEY] = {"digest": clip.digest, "frame": int(st.session_state[radio_key]), "px": px, "py": py}


def _current_point(clip: Clip) -> tuple[int, int, int]:
    """(frame, px, py) of the last click on this clip; a shared link's point (if it fits the clip); else the
    centre of the middle frame."""
    point = st.session_state.get(POINT_KEY)
    if point and point.get("digest") == clip.digest:
        return int(point["frame"]), int(point["px"]), int(point["py"])
    height, width = clip.size
    linked = st.session_state.pop(VIDEO_URL_POINT_KEY, None)
    if linked is not None and linked[0] < len(clip.frames) and linked[1] < width and linked[2] < height:
        st.session_state[POINT_KEY] = {"digest": clip.digest, "frame": linked[0], "px": linked[1], "py": linked[2]}
        return linked
    return len(clip.frames) // 2, width // 2, height // 2


def _start_view(settings: Settings):
    """The examples folder's first view for this page (examples/start.json), if it has one."""
    if settings.examples is None:
        return None
    return cached_examples(str(settings.examples)).start("video")


def _start_point(clip: Clip, start) -> tuple[int, int, int] | None:
    """(frame, px, py) of the start view in this clip, when the clip is the start's (its frame is there)."""
    if start.frame >= len(clip.frames) or clip.names[start.frame] != start.example:
        return None
    return (start.frame, *start.point_in(clip.frames[start.frame]))


def _seed_start(clip: Clip, start) -> bool:
    """Put the start view's point on its clip before any click (a click or a shared link wins); whether this
    clip is the start's."""
    point = _start_point(clip, start)
    if point is None:
        return False
    remembered = st.session_state.get(POINT_KEY)
    if (not remembered or remembered.get("digest") != clip.digest) and VIDEO_URL_POINT_KEY not in st.session_state:
        st.session_state[POINT_KEY] = {"digest": clip.digest, "frame": point[0], "px": point[1], "py": point[2]}
    return True


def _share_table(result: ClipMaps, frames: int) -> None:
    rows = [
        f"| R = {r} | **{100 * result.share[r]:.1f}%** | {100 * result.uniform_share[r]:.1f}% | {100 / frames:.1f}% |"
        for r in result.maps
    ]  # fmt: skip
    st.markdown(
        "Temporal share: how much of the clicked position's influence comes from its own frame.\n\n"
        "| loops | this model | uniform attention | 1 / T |\n| --- | ---: | ---: | ---: |\n" + "\n".join(rows)
    )


def video_page() -> None:
    st.title("Criss-cross attention across frames")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        st.error(str(error))
        return
    restore_video_from_url()
    try:
        catalogue = read_catalogue(settings.checkpoints, settings.extra_checkpoints).videos_only()
    except ModelError as error:
        st.error(str(error))
        return
    if not catalogue.entries:
        st.info(HOW_TO_TRAIN)
        return
    names = [e.name for e in catalogue.entries]
    keep_if_valid("video_model", names)  # a stale or edited link
    st.session_state.setdefault("video_model", catalogue.default_entry().name)  # the index's video default (T = 5)
    name = st.sidebar.selectbox(
        "Video model", names, key="video_model", format_func=lambda n: catalogue.get(n).label
    )
    entry = catalogue.get(name)
    device, _ = resolve_device(settings.device)
    try:
        loaded = cached_model(str(entry.path), str(device), entry.path.stat().st_mtime)
    except (ModelError, OSError) as error:
        st.error(f"{error}\n\nThe app keeps working: pick another model.")
        return
    frames = int(entry.frames)
    start = _start_view(settings)
    if start is not None:
        st.session_state.setdefault("video_example", start.example)
    try:
        clip = _choose_clip(settings, frames)
    except ClipError as error:
        st.error(f"{error}\n\nThe app keeps working: change the clip.")
        return
    if clip is None:
        return
    options = _options()
    at_start = start is not None and _seed_start(clip, start)
    frame, px, py = _current_point(clip)
    radio_key = f"{FRAME_KEY}-{clip.digest}"
    st.session_state[radio_key] = frame  # the point decides; the radio moves the point (same pixel, other frame)
    frame = st.radio(
        "Frame to click",
        range(frames),
        key=radio_key,
        horizontal=True,
        format_func=lambda t: f"{t + 1}: {clip.names[t].rsplit('/', 1)[-1]}",
        on_change=lambda: _move_to_frame(clip, radio_key),
    )
    if at_start and (frame, px, py) == _start_point(clip, start):
        st.info(f"**Start here.** The page opened on the example clip with one pixel clicked in frame {frame + 1} "
                f"({start.why}). The maps show where its features come from in all {frames} frames. **Click any "
                "pixel of the frame on the left**, or pick another frame above; the sidebar's colour scale "
                "switches between each frame's own scale and one for the clip.")  # fmt: skip
    decode = cached_clip_decode(loaded, clip, shared_cache(settings.cache_mb * 2**20))
    grid = decode.grid_size
    cell = pixel_to_cell(px, py, clip.size, grid)
    left, right = st.columns([1, 2])
    with left:
        widget_key = f"video-click-{clip.digest}-{frame}"
        marked = render.draw_marker(clip.frames[frame].rgb, px, py)
        clickable_image(marked, key=widget_key, on_change=lambda: _remember_click(widget_key, clip, frame))
        st.caption(f"Clicked pixel ({px}, {py}) of frame {frame + 1} of {frames}, cell {cell} of the {grid[0]} x "
                   f"{grid[1]} grid. Click any pixel of this frame; pick another frame above.")  # fmt: skip
    result = clip_maps(decode, frame, cell, options.mode, loaded.gamma)
    write_video_to_url((frame, px, py))
    with right:
        _share_table(result, frames)
        st.caption(
            f"γ = {loaded.gamma:.3g}. One loop reaches the clicked position's row, column and own position in the "
            "other frames; two reach positions that differ in two coordinates; three reach all."
        )
    _map_grid(clip, decode, result, frame, (px, py), options, loaded)


def _frame_scales(result: ClipMaps, frames: int, options: ViewOptions) -> list:
    """A colour scale per frame: its own (pooled over R, so its R columns compare), or one for the whole clip."""
    if st.session_state.get(FRAME_SCALE_KEY, EACH_FRAME) == ONE_SCALE:
        return [colour_scale(np.concatenate([m.ravel() for m in result.maps.values()]), options)] * frames
    return [colour_scale(np.concatenate([m[t].ravel() for m in result.maps.values()]), options) for t in range(frames)]


def _frame_label(clip: Clip, result: ClipMaps, t: int, frame: int) -> str:
    """The frame's name and its share of the influence at the largest R against a uniform attention's."""
    label = f"{t + 1}: {clip.names[t].rsplit('/', 1)[-1]}"
    label = f"**▶ {label}** (clicked)" if t == frame else label
    if result.frame_share is None:
        return label
    r = max(result.frame_share)
    share, uniform = result.frame_share[r][t], result.uniform_frame_share[r][t]
    return f"{label}\n\n{100 * share:.1f}% of the influence at R = {r} (uniform: {100 * uniform:.1f}%)"


def _map_grid(clip: Clip, decode, result: ClipMaps, frame: int, point, options: ViewOptions, loaded) -> None:
    """One row per frame: its influence maps at R = 1, 2, 3 (each frame on its own colour scale, or one for the
    clip), its share of the influence, and its segmentation."""
    scales = _frame_scales(result, len(clip.frames), options)
    own = st.session_state.get(FRAME_SCALE_KEY, EACH_FRAME) == EACH_FRAME
    st.caption(
        "Colour scale: **each frame its own** (pooled over its R columns); the share beside each frame says how "
        "much of the influence lies there." if own else
        "Colour scale: **one for all frames**: the clicked frame holds most of the influence, so the others look "
        "faint. Choose *each frame its own* in the sidebar to see where their share goes."
    )  # fmt: skip
    trained = decode.trained
    header = st.columns([1.2] + [2] * len(result.maps) + [2])
    header[0].markdown("**frame**")
    for column, r in zip(header[1:], result.maps, strict=False):
        column.markdown(f"**R = {r}**")
    header[-1].markdown(f"**segmentation (R = {trained})**")
    names = [*loaded.class_names, "?"]
    for t, image in enumerate(clip.frames):
        row = st.columns([1.2] + [2] * len(result.maps) + [2])
        row[0].markdown(_frame_label(clip, result, t, frame))
        photo = photo_url(render.jpeg_bytes(image.rgb), f"video-photo-{clip.digest}-{t}")
        for column, (r, maps) in zip(row[1:], result.maps.items(), strict=False):
            grid_classes = _grid_classes(decode.predictions[t], maps.shape[1:], len(loaded.class_names))
            args = chart_args(photo, clip.size, shown_map(maps[t], (0, 0), False), maps[t], grid_classes, names,
                              scales[t], options.heat_opacity, False, point if t == frame else None)  # fmt: skip
            with column:
                influence_chart(args, key=f"video-map-{t}-{r}")
        segmentation = render.segmentation_rgb(image.rgb, decode.predictions[t], loaded.palette, 0.55)
        row[-1].image(render.jpeg_bytes(segmentation), width="stretch")
    maps = np.stack([result.maps[r] for r in result.maps])  # (R, T, h, w)
    st.download_button("Download the maps (.npy, R x T x h x w)", render.npy_bytes(maps), "clip_influence.npy")


def _grid_classes(prediction: np.ndarray, grid: tuple[int, int], num_classes: int) -> np.ndarray:
    """(H, W) predicted classes sampled at the grid's cell centres: (h, w), for the charts' hover."""
    return np.minimum(sample_at_cells(prediction, grid), num_classes)
