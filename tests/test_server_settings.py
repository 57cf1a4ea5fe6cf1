"""The served app's settings: `.streamlit/config.toml` as Streamlit itself reads it."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the `toml` package Streamlit itself depends on
    import toml as tomllib

ROOT = Path(__file__).absolute().parent.parent
CONFIG = ROOT / ".streamlit" / "config.toml"


def test_config_file_sets_the_safe_server_options():
    settings = tomllib.loads(CONFIG.read_text())
    server = settings["server"]
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert 1 <= server["maxUploadSize"] <= 50
    assert server["address"] == "127.0.0.1"  # exposing the app is an explicit decision (README)
    assert settings["browser"]["gatherUsageStats"] is False


def test_streamlit_reads_the_same_values_from_the_repository_root(monkeypatch):
    from streamlit import config

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("server.enableXsrfProtection") is True
        assert config.get_option("server.maxUploadSize") == tomllib.loads(CONFIG.read_text())["server"]["maxUploadSize"]
        assert config.get_option("browser.gatherUsageStats") is False
        assert config.get_option("server.address") == "127.0.0.1"
    finally:
        os.chdir(ROOT)
        config.get_config_options(force_reparse=True)
