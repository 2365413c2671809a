"""Moved to :mod:`core.db.session`; this path stays for bench/, which imports it."""

from core.db.session import get_engine, get_sessionmaker, session_scope

__all__ = ["get_engine", "get_sessionmaker", "session_scope"]
