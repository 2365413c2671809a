"""The web dashboard at ``/dashboard``: a server-rendered shell plus one bundled script that reads the /v1 API
with the user's own key (asked once, kept in sessionStorage). The pages themselves hold no data."""

from app.dashboard.router import router

__all__ = ["router"]
