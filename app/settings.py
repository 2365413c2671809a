"""Moved to :mod:`core.settings`; this path stays for bench/, which imports it."""

from core.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
