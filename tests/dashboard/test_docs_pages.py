"""The landing page and the API reference in headless Chromium: `/` links the dashboard and the docs, and
`/docs` renders Swagger UI with every request to another host refused (no CDN)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.dashboard.conftest import Seeded

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard")]


def test_home_links_the_dashboard_and_the_docs(seeded: Seeded) -> None:
    base = seeded.service.base_url.removesuffix("/v1")
    resp = httpx.get(base + "/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert 'href="/dashboard/"' in resp.text and 'href="/docs"' in resp.text
    assert "/" not in httpx.get(base + "/openapi.json").json()["paths"]


def test_docs_render_offline(page: Any, seeded: Seeded) -> None:
    base = seeded.service.base_url.removesuffix("/v1")
    html = httpx.get(base + "/docs").text
    assert "cdn" not in html.lower() and "https://" not in html
    own = urlsplit(base).netloc
    elsewhere: list[str] = []

    def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.goto(base + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "OpenRFT" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector('.opblock-summary-path[data-path="/v1/fine_tuning/jobs"]')
    assert page.is_visible(".swagger-ui .btn.authorize")  # bearer auth is in the schema
    assert elsewhere == [] and page.js_errors == []
    assert httpx.get(base + "/docs/static/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(base + "/docs/static/..%2Fcore.py").status_code == 404
