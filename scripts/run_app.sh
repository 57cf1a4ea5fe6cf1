#!/usr/bin/env bash
# Start the Streamlit explorer on the bundled checkpoints, in the project's own .venv (made on first use).
source "$(dirname "$0")/_venv.sh" requirements.txt
if [ ! -f app/main.py ]; then
  echo "The explorer app is not built yet (app/main.py is missing); the library and tests work already." >&2
  exit 1
fi
exec .venv/bin/python -m streamlit run app/main.py "$@"
