"""The web page (docs/ui.md): a search page at ``/`` and an entity's timeline at ``/ui/entities/{id}``.

The pages are static HTML and ES modules shipped in the package (``timeline/static``), the
third-party ones vendored from the npm registry (``timeline/static/vendor/manifest.json``). Their
scripts read the JSON API of this same service; nothing is fetched from another host, and the
Content-Security-Policy header makes the browser refuse it if anything tried.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from projections.queries import NotFound
from starlette.staticfiles import StaticFiles

from .runtime import Runtime

STATIC = Path(str(files("timeline") / "static"))
STATIC_PREFIX = "/ui/static"

# Only this origin, for everything: scripts, styles, images, fetch and EventSource; no inline script.
# Inline styles are allowed: vis-timeline's standalone build adds its CSS as <style> elements.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """The shipped assets, with the page's security headers; revalidated, never fetched elsewhere."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


def _page(name: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse((STATIC / "ui" / name).read_text(encoding="utf-8"), status_code=status, headers=PAGE_HEADERS)


def install(app: FastAPI, runtime: Runtime) -> None:
    """Add the pages and their assets to ``app``."""
    router = APIRouter(include_in_schema=False)
    queries = runtime.service.queries

    @router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def search_page() -> HTMLResponse:
        return _page("index.html")

    @router.api_route("/ui/entities/{entity_id}", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def entity_page(entity_id: str) -> HTMLResponse:
        try:
            await runtime.read(queries.entity, entity_id, None)
        except NotFound:
            return _page("entity.html", status=404)  # the page's script then says what is missing
        return _page("entity.html")

    app.include_router(router)
    app.mount(STATIC_PREFIX, _Assets(directory=STATIC), name="ui-static")
