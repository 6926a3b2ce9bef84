"""The web dashboard under ``/ui`` (docs/dashboard.md): its static files (``pages``) and the API
endpoints its pages read (``api``). ``routes`` are added to the app's own router as they are (an
included router would be one more layer of matching on every request, see app.py)."""

from starlette.routing import BaseRoute

from services.submitter.ui import api, pages

routes: list[BaseRoute] = [*pages.router.routes, *api.router.routes]

__all__ = ["routes"]
