"""The landing page ``/`` and the API reference ``/docs`` (Swagger UI served from this service, so it
renders with no network: its files ship in the ``fastapi-offline`` package)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import APIError

router = APIRouter(include_in_schema=False)

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def swagger_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


_HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>OpenRFT</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>OpenRFT</h1>
<p>Self-hosted, OpenAI-compatible reinforcement fine-tuning. Point the <code>openai</code> SDK at
<code>/v1</code> of this address with your API key.</p>
<ul>
<li><a href="/dashboard/">Dashboard</a>: jobs, live metrics, checkpoints, rollouts</li>
<li><a href="/docs">API reference</a> (<a href="/openapi.json">OpenAPI schema</a>)</li>
</ul>
</body></html>
"""


@router.get("/", response_class=HTMLResponse)
def home() -> HTMLResponse:
    return HTMLResponse(_HOME)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="OpenRFT API",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get("/docs/static/{name}")
def swagger_asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise APIError(404, f"No such documentation file: {name!r}.")
    return FileResponse(swagger_dir() / name, media_type=_ASSETS[name])
