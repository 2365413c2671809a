"""Start-up of the service: wait for the database, migrate, make sure a key exists."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from tenacity import retry, stop_after_delay, wait_exponential

from app import auth
from core.db import migrate
from core.db.models import ApiKey, Organization
from core.db.session import get_engine, session_scope
from core.settings import Settings
from core.storage import LocalStorage

log = logging.getLogger("openrft.bootstrap")


@dataclass
class BootstrapResult:
    new_key: str | None = None
    """Set when a key was generated on this start (the embedded default's first start)."""


@retry(stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
def wait_for_database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


# An upload's temporary file older than this belongs to an API process that died mid-upload.
STALE_UPLOAD_SECONDS = 3600


def _user_keys(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .join(Organization, ApiKey.org_pk == Organization.pk)
            .where(Organization.name != auth.INTERNAL_ORG)
        )
        or 0
    )


def ensure_internal_key(session: Session, settings: Settings) -> str:
    """The service's own key, so model graders can call this service out of the box: kept in a 0600 file
    under OPENRFT_HOME (the API and workers share it; workers elsewhere use OPENRFT_GRADER_API_KEY) and
    registered in the database. Several processes starting at once agree on the first file written."""
    key = settings.internal_api_key()
    if key is None:
        key = auth.generate_key()
        try:
            fd = os.open(settings.internal_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = settings.internal_api_key() or key
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(key + "\n")
    if auth.ensure_key(session, key, auth.INTERNAL_ORG, name=auth.INTERNAL_KEY_NAME):
        log.info("registered the service's internal key for model graders")
    return key


def prepare(settings: Settings, *, generate_key: bool = True) -> BootstrapResult:
    settings.ensure_dirs()
    wait_for_database()
    migrate.upgrade(settings.sqlalchemy_url)
    removed = LocalStorage(settings.files_dir).remove_stale_uploads(STALE_UPLOAD_SECONDS)
    if removed:
        log.info("removed %d unfinished uploads left by a stopped API process", removed)
    result = BootstrapResult()
    with session_scope() as s:
        if settings.bootstrap_api_key:
            if auth.ensure_key(s, settings.bootstrap_api_key, settings.bootstrap_org):
                log.info("bootstrap key registered for organization %r", settings.bootstrap_org)
        elif generate_key and not _user_keys(s):
            key = auth.generate_key()
            auth.add_key(s, auth.get_or_create_org(s, settings.bootstrap_org), key, name="local")
            result.new_key = key
        ensure_internal_key(s, settings)
    if result.new_key:
        key_file = settings.home / "api_key"
        key_file.write_text(result.new_key + "\n")
        os.chmod(key_file, 0o600)
    return result
