"""The first-visit guide: what a criss-cross is, what R means, what the colours mean.

Shown on the first open of a session, dismissed with one click (remembered for the session), and
brought back from the sidebar. With an examples folder configured it offers a one-click example.
"""

from __future__ import annotations

import streamlit as st

DISMISSED_KEY = "guide_dismissed"
GUIDE = """
**How to read this page**

- **A criss-cross.** In one loop of criss-cross attention, each position of the model's feature grid looks
  at its own **row and column** only (the "cross", h + w - 1 positions) and mixes their features by learned
  weights. That is much cheaper than looking at the whole image.
- **R, the loop count.** Running the same module again (**R = 2**) lets every position read the crosses of
  the positions on its cross: row then column reaches **every** position of the image. **R = 1** reaches
  only the cross, by construction. The columns show R = 1, 2, 3 side by side.
- **The colours.** Click a pixel: each heat map shows how much of that pixel's result comes from every
  other position (its *influence*, shares of 100%); the colour bar under each map says exactly what is
  drawn. The cross outshines everything else, so try the sidebar's *Colour scale* (clamp, log) and
  *Hide the clicked pixel's own row and column*. The bars on the left show how much of the influence is
  on the cross at each R. The segmentation colours are the predicted classes (legend under each).
"""


def first_visit_guide(example_source: tuple[str, str] | None, next_step: str | None = None) -> None:
    """The guide, unless dismissed; example_source = (session key, value) selecting the examples folder;
    next_step: what to do first on the page as it opened (e.g. which pixel to click)."""
    if st.session_state.get(DISMISSED_KEY):
        st.sidebar.button("What am I looking at?", key="guide-show", on_click=_set_dismissed, args=(False,))
        return
    with st.container(border=True):
        if next_step:
            st.markdown(f"**Start here.** {next_step}")
        st.markdown(GUIDE)
        close, example, hint = st.columns([1, 1.4, 4])
        close.button("Got it", key="guide-close", on_click=_set_dismissed, args=(True,))
        if example_source is not None:
            example.button(
                "Show me an example", key="guide-example", type="primary", on_click=_open_example, args=example_source
            )
        else:
            hint.caption(
                "Set `CCNET_EXAMPLES` to a dataset root or a folder of images for a one-click example; "
                "or upload an image in the sidebar."
            )


def _set_dismissed(dismissed: bool) -> None:
    st.session_state[DISMISSED_KEY] = dismissed


def _open_example(key: str, value: str) -> None:
    st.session_state[key] = value
    st.session_state[DISMISSED_KEY] = True
