"""The web dashboard under ``/ui`` (docs/dashboard.md): its static files (``pages``) and the API
endpoints its pages read (``api``), both on one router the app includes."""

from fastapi import APIRouter

from services.submitter.ui import api, pages

router = APIRouter()
router.include_router(pages.router)
router.include_router(api.router)

__all__ = ["router"]
