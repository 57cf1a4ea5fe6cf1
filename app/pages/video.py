"""The video page (registered by app/main.py through st.navigation; also runs on its own)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).absolute().parent.parent.parent)
if _ROOT not in sys.path:  # run on its own, only app/pages/ would be on the path
    sys.path.insert(0, _ROOT)

from app.video import video_page  # noqa: E402

video_page()
