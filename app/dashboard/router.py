"""Routes of the dashboard: two HTML shells and their static files. Not part of the OpenAPI contract."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from app.dashboard.login import redeem_login
from app.deps import SettingsDep
from app.errors import APIError

HERE = Path(__file__).resolve().parent
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# The shell is static and holds no data; the script and the API do the rest. Nothing loads from elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _page(request: Request, template: str, **context: str) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("", response_class=HTMLResponse)
def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", page="jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    # Only the id from the URL goes in (escaped); the job itself is fetched by the script with the user's key.
    return _page(request, "job.html", page="job", job_id=job_id)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    if name not in STATIC:
        raise APIError(404, f"No such dashboard file: {name!r}.")
    return FileResponse(
        HERE / "static" / name, media_type=STATIC[name], headers={"cache-control": "no-cache"}
    )


class LoginRequest(BaseModel):
    token: str


@router.post("/login")
def login(body: LoginRequest, settings: SettingsDep) -> dict[str, str]:
    """Redeem the one-time link ``openrft serve`` printed for the local key (app.dashboard.login)."""
    key = redeem_login(settings, body.token)
    if key is None:
        raise APIError(
            401,
            "This login link was used already or has expired. Paste the API key instead (openrft serve printed "
            "it, and keeps it in OPENRFT_HOME/api_key), or restart openrft serve for a new link.",
            code="invalid_login_link",
        )
    return {"api_key": key}
