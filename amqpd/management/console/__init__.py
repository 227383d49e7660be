"""The web console: static files (HTML, CSS, JavaScript modules) served from this folder.

`/` serves the page and `/console/<file>` its assets, without a login: the page asks for
the user's name and password and sends them as HTTP basic auth on each /api call, so the
API stays the only thing that checks them. No build step: the files are served as they
are, and only files of this folder whose kind `_CONTENT_TYPES` names.

Imports aiohttp.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

FOLDER = Path(__file__).parent
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page and its modules change with each release; the browser checks before reusing.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _file_response(name: str) -> web.StreamResponse:
    path = FOLDER / name
    content_type = _CONTENT_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or content_type is None or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={**_HEADERS, "Content-Type": content_type})


async def index(_request: web.Request) -> web.StreamResponse:
    return _file_response("index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    return _file_response(request.match_info["name"])


def console_routes() -> list[tuple[str, str, Handler]]:
    """The console's routes for the management app: no login needed for these."""
    return [("GET", "/", index), ("GET", "/console/{name}", asset)]
