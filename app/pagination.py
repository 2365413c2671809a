"""Cursor pagination over the internal ``pk``: ``after=<public id>`` becomes an index range condition."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.errors import APIError

T = TypeVar("T")


def paginate(
    session: Session,
    query: Select[Any],
    model: Any,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"] = "desc",
    scope: Any = None,
) -> tuple[Sequence[Any], bool]:
    """Rows after the cursor and whether more exist. ``scope`` is an extra condition the cursor row must
    meet (its organization or job), so an id from elsewhere is a 400, not a way to probe other tenants."""
    if after:
        cursor_q = select(model.pk).where(model.id == after)
        if scope is not None:
            cursor_q = cursor_q.where(scope)
        cursor_pk = session.scalar(cursor_q)
        if cursor_pk is None:
            raise APIError(
                400, f"Invalid 'after' cursor: {after!r} is not an id from this list.", param="after"
            )
        query = query.where(model.pk < cursor_pk if order == "desc" else model.pk > cursor_pk)
    query = query.order_by(model.pk.desc() if order == "desc" else model.pk.asc()).limit(limit + 1)
    rows = session.scalars(query).all()
    return rows[:limit], len(rows) > limit


def page_body(items: Sequence[T], has_more: bool, ident: Callable[[T], str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(items),
        "has_more": has_more,
        "first_id": ident(items[0]) if items else None,
        "last_id": ident(items[-1]) if items else None,
    }
