"""Where the client finds its API key and base URL: arguments, then the environment, then what ``openrft serve``
wrote in its home: the key file on its first start (``$OPENRFT_HOME/api_key``) and, while it runs, the URL it
serves at (``$OPENRFT_HOME/server_url``, whatever ``--port`` it was given). Imports nothing of the SDK: the
server's commands read it too."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "OPENRFT_API_KEY"
BASE_URL_ENV = "OPENRFT_BASE_URL"
HOME_ENV = "OPENRFT_HOME"
SERVER_URL_FILE = "server_url"


def home_dir() -> Path:
    return Path(os.environ.get(HOME_ENV) or "~/.openrft").expanduser()


def key_file() -> Path:
    return home_dir() / "api_key"


def _read_key_file(path: Path) -> str | None:
    try:
        key = path.read_text().strip()
    except OSError:
        return None
    return key or None


def resolve_api_key(api_key: str | None) -> str:
    key = api_key or os.environ.get(API_KEY_ENV) or _read_key_file(key_file())
    if not key:
        from openrft._exceptions import NoAPIKeyError  # the SDK's error classes: imported when needed

        raise NoAPIKeyError(
            f"No API key: pass api_key=..., set {API_KEY_ENV}, or start the embedded service once "
            f"(`openrft serve` writes one to {key_file()})."
        )
    return key


def served_url() -> str | None:
    """The URL a running ``openrft serve`` of this home recorded, if any."""
    return _read_key_file(home_dir() / SERVER_URL_FILE)


def resolve_base_url(base_url: object | None) -> str:
    """``base_url`` is a string, or the SDK's URL object when the client is copied (``with_options``); then
    OPENRFT_BASE_URL, then the URL a running ``openrft serve`` of this home recorded."""
    url = (
        str(base_url) if base_url else os.environ.get(BASE_URL_ENV) or served_url() or DEFAULT_BASE_URL
    ).rstrip("/")
    if not url.startswith(("http://", "https://")):
        from openrft._exceptions import OpenRFTError

        raise OpenRFTError(f"The base URL must start with http:// or https://, got {url!r}.")
    return url
