"""CCNet explorer: click a pixel, watch its influence spread over R = 1, 2, 3 criss-cross loops.

Run from the repository root:  streamlit run app/main.py   (settings: see app/settings.py)
Three pages (st.navigation): the explorer (this file's `explorer_page`), the ablation (app/pages/ablation.py) and
the attention atlas (app/pages/atlas.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on the path, not the repository root that holds app, ccnet, training.
_ROOT = str(Path(__file__).absolute().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import controls  # noqa: E402
from app.examples import HOW_TO_SET_EXAMPLES, ExampleSet, load_example  # noqa: E402
from app.guide import first_visit_guide  # noqa: E402
from app.images import UPLOAD_EXTENSIONS, DecodedImage, ImageError, decode_image  # noqa: E402
from app.model_card import show_model_cards  # noqa: E402
from app.models import (  # noqa: E402
    HOW_TO_MAKE_A_CHECKPOINT,
    Catalogue,
    LoadedModel,
    ModelError,
    read_catalogue,
    resolve_device,
)
from app.resources import cached_examples, cached_model, shared_cache  # noqa: E402
from app.settings import Settings, SettingsError  # noqa: E402
from app.shareable import URL_POINT_KEY, keep_if_valid, restore_from_url  # noqa: E402
from app.view import (  # noqa: E402
    POINT_KEY,
    GroundTruth,
    exploration,
    image_attention_section,
    seed_point,
    segmentation_changes,
)

SOURCE_KEY = "source"
UPLOAD = "Upload"
EXAMPLES = "Examples folder"


def main() -> None:
    st.set_page_config(page_title="CCNet explorer", layout="wide")
    pages = [
        st.Page(explorer_page, title="Explorer", default=True),
        st.Page("pages/ablation.py", title="Ablation: R = 0 to 3", url_path="ablation"),
        st.Page("pages/atlas.py", title="Attention atlas", url_path="atlas"),
        st.Page("pages/video.py", title="Video: attention across frames", url_path="video"),
    ]
    st.navigation(pages).run()


def explorer_page() -> None:
    st.title("Criss-cross attention explorer")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        st.error(str(error))
        return
    restore_from_url()
    examples = cached_examples(str(settings.examples)) if settings.examples else None
    has_examples = examples is not None and bool(examples.examples)
    first_visit_guide((SOURCE_KEY, EXAMPLES) if has_examples else None, _next_step(examples))
    device, device_warning = resolve_device(settings.device)
    if device_warning:
        st.sidebar.warning(device_warning)

    catalogue = _catalogue_or_message(settings)
    if catalogue is None:
        return
    catalogue = catalogue.images_only()  # video models: the Video page
    if not catalogue.entries:
        st.warning("Every checkpoint here is a video model: open the Video page.")
        return
    image, truth = _choose_image(settings, examples)
    columns = controls.choose_columns(catalogue)
    baseline = controls.choose_baseline(catalogue, columns)  # the per-R modes' R = 0 model, or None
    shown = [*([baseline] if baseline else []), *(columns or [])]  # every model on the page, R = 0 first
    options = controls.view_options()
    st.sidebar.caption(f"Device: **{device}** (CCNET_DEVICE={settings.device}). Checkpoints: `{catalogue.folder}`")
    if image is None or columns is None:
        return
    models = _load_models(shown, device)
    if models is None:
        return
    _describe_models(models)
    show_model_cards(models)
    cache = shared_cache(settings.cache_mb * 2**20)
    exploration(image, truth, columns, models, options, cache, baseline)
    image_attention_section(image, columns, models, cache)
    if options.show_changes:
        segmentation_changes(image, shown, models, cache)


def _describe_models(models: dict[str, LoadedModel]) -> None:
    """Each model's dataset and class count (11 for CamVid, 19 Cityscapes, 150 ADE20K)."""
    lines = [
        f"- `{name}`: {loaded.metadata.get('dataset') or 'dataset unknown'}, {len(loaded.class_names)} classes, "
        f"trained with R = {loaded.trained_recurrence}"
        for name, loaded in models.items()
    ]
    st.sidebar.markdown("**Models shown**\n" + "\n".join(lines))


def _catalogue_or_message(settings: Settings) -> Catalogue | None:
    try:
        catalogue = read_catalogue(settings.checkpoints, settings.extra_checkpoints)
    except ModelError as error:
        st.error(str(error))
        return None
    for problem in catalogue.problems:  # extra folders (CCNET_EXTRA_CHECKPOINTS) that could not be listed
        st.sidebar.warning(problem)
    if not catalogue.entries:
        st.warning(f"No trained checkpoint in `{settings.checkpoints}` yet, so there is nothing to explore.")
        st.markdown(HOW_TO_MAKE_A_CHECKPOINT)
        return None
    return catalogue


def _next_step(examples: ExampleSet | None) -> str | None:
    """What the first-visit guide tells a newcomer to do next, while the page shows the start view as it opened
    (the start example, its pixel; not an upload, another example, a link's pixel or a click)."""
    start = examples.start("explorer") if examples is not None else None
    if start is None or st.session_state.get(SOURCE_KEY, EXAMPLES) != EXAMPLES:
        return None
    if st.session_state.get("example", start.example) != start.example or URL_POINT_KEY in st.session_state:
        return None
    point = st.session_state.get(POINT_KEY)
    if point is not None and (point["px"], point["py"]) != start.point:  # clicked elsewhere (unscaled: 480 x 360)
        return None
    return (f"The page opened on an example with one pixel already clicked, the red cross ({start.why}). **Click "
            "any other pixel of the photo** (a pole, the road, a person) and every map follows it; pick another "
            "example or upload your own photo in the sidebar.")  # fmt: skip


def _choose_image(settings: Settings, examples: ExampleSet | None) -> tuple[DecodedImage | None, GroundTruth | None]:
    """Upload or examples folder -> decoded image (and ground truth); problems shown, never raised. The examples
    come first when there are any, so the page shows maps before anything is uploaded."""
    st.sidebar.header("Image")
    if examples is not None and examples.examples:
        st.session_state.setdefault(SOURCE_KEY, EXAMPLES)
    source = st.sidebar.radio("Source", [UPLOAD, EXAMPLES], key=SOURCE_KEY, horizontal=True)
    try:
        if source == UPLOAD:
            return _uploaded_image(settings), None
        return _example_image(settings, examples)
    except ImageError as error:
        st.error(f"{error}\n\nThe app keeps working: choose another image.")
        return None, None


def _uploaded_image(settings: Settings) -> DecodedImage | None:
    upload = st.sidebar.file_uploader("Image file", type=UPLOAD_EXTENSIONS, key="upload")
    if upload is None:
        st.info("Upload an image (PNG, JPEG, WebP, BMP or TIFF) in the sidebar, or pick an example.")
        return None
    image = _decoded_upload(upload.file_id, upload.getvalue(), upload.name, settings.max_side)
    _show_notices(image)
    return image


def _decoded_upload(file_id: str, data: bytes, name: str, max_side: int) -> DecodedImage:
    """Decode once per upload in this session (reruns reuse it)."""
    key = ("decoded", file_id, max_side)
    remembered = st.session_state.get("decoded_upload")
    if remembered and remembered[0] == key:
        return remembered[1]
    image = decode_image(data, max_side=max_side, name=name)
    st.session_state["decoded_upload"] = (key, image)
    return image


def _example_image(settings: Settings, examples: ExampleSet | None) -> tuple[DecodedImage | None, GroundTruth | None]:
    if examples is None or not examples.examples:
        st.info(examples.message if examples is not None else HOW_TO_SET_EXAMPLES)
        return None, None
    st.sidebar.caption(examples.message)
    names = [example.name for example in examples.examples]
    keep_if_valid("example", names)
    start = examples.start("explorer")
    if start is not None:
        st.session_state.setdefault("example", start.example)
    name = st.sidebar.selectbox("Example", names, key="example")
    example = examples.examples[names.index(name)]
    loaded = load_example(examples, example, settings.max_side)
    if start is not None and name == start.example:
        seed_point(loaded.image, *start.point_in(loaded.image))
    _show_notices(loaded.image)
    truth = None
    if loaded.labels is not None:
        truth = GroundTruth(loaded.labels, loaded.class_names, loaded.palette)
    return loaded.image, truth


def _show_notices(image: DecodedImage) -> None:
    for notice in image.notices:
        st.info(notice)


def _load_models(columns: list[controls.ColumnSpec], device) -> dict[str, LoadedModel] | None:
    models = {}
    for spec in columns:
        entry = spec.entry
        if entry.name in models:
            continue
        try:
            modified = entry.path.stat().st_mtime if entry.path.exists() else 0.0
            models[entry.name] = cached_model(str(entry.path), str(device), modified)
        except ModelError as error:
            st.error(str(error))
            return None
    return models


main()
