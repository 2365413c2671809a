"""Moved to :mod:`core.ids`; this path stays for bench/, which imports it."""

from core.ids import *  # noqa: F403
