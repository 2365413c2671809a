"""Moved to :mod:`core.db`; ``app.db.session`` stays for bench/, which imports it."""
