"""API keys: generated, stored as SHA-256 digests, scoped to an organization, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import ids
from core.db.base import utcnow
from core.db.models import ApiKey, Organization

KEY_PREFIX = "sk-openrft-"
# The service's own credential, for model graders calling this service (see app.bootstrap): its own
# organization, so a grader reaches the base models and no tenant's fine-tuned models or files.
INTERNAL_ORG = "openrft-internal"
INTERNAL_KEY_NAME = "internal"
_ORG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the organization every query is scoped to."""

    org_pk: int
    org_id: str
    org_name: str
    key_id: str
    internal: bool = False
    """The service's own key: its grader traffic is not rate limited like a user's."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _lookup(key_digest: str) -> str:
    # The row is found by a digest prefix (indexed), then the whole digest is compared in constant time.
    return key_digest[:16]


def generate_key() -> str:
    return KEY_PREFIX + ids.random_token(40)


def get_or_create_org(session: Session, name: str) -> Organization:
    if not _ORG_NAME.match(name):
        raise ValueError(
            "organization names are 1-64 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        org = Organization(id=ids.org_id(), name=name)
        session.add(org)
        session.flush()
    return org


def add_key(session: Session, org: Organization, key: str, name: str | None = None) -> ApiKey:
    key_digest = digest(key)
    row = ApiKey(id=ids.key_id(), org_pk=org.pk, prefix=_lookup(key_digest), key_hash=key_digest, name=name)
    session.add(row)
    session.flush()
    return row


def find_key(session: Session, key: str) -> ApiKey | None:
    """The active key row for ``key``, or None (unknown or revoked)."""
    key_digest = digest(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == _lookup(key_digest)))
    if row is None or not hmac.compare_digest(row.key_hash, key_digest) or row.revoked_at is not None:
        return None
    return row


def revoke_key(session: Session, key: str) -> bool:
    key_digest = digest(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == _lookup(key_digest)))
    if row is None or not hmac.compare_digest(row.key_hash, key_digest) or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def ensure_key(session: Session, key: str, org_name: str, *, name: str = "bootstrap") -> bool:
    """Make ``key`` valid for ``org_name`` if no key with its digest exists yet; True if it was added.
    A revoked key stays revoked."""
    key_digest = digest(key)
    if session.scalar(select(ApiKey).where(ApiKey.prefix == _lookup(key_digest))) is not None:
        return False
    add_key(session, get_or_create_org(session, org_name), key, name=name)
    return True


def principal_for(row: ApiKey) -> Principal:
    org = row.organization
    internal = org.name == INTERNAL_ORG and row.name == INTERNAL_KEY_NAME
    return Principal(org_pk=org.pk, org_id=org.id, org_name=org.name, key_id=row.id, internal=internal)
