"""The playground: a page at `/` to browse the catalog and run its tools from a browser.

Plain HTML, CSS and JavaScript shipped inside the package (toonforge/api/playground), served
by the API process with no build step and nothing fetched from elsewhere, so it works
offline. The page talks to this same server only: the catalog (Tool/List, Tool/Detail), Run
signed in the browser with the project's key, the task WebSocket, Task/List, Kill and
Cancel. Not part of the API's contract (absent from the OpenAPI document).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from toonforge.api.envelope import NOT_FOUND, ApiError

router = APIRouter()

PAGE_PATH = "/"
ASSET_ROUTE = "/playground/{name}"
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "sign.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Scripts, styles and sockets from this server only; images and videos may come from the
# outputs' public URL (another host name behind a proxy) or a tool's cover.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src * data: blob:; media-src * data: blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Small files that change with the package: always revalidated.
    "Cache-Control": "no-cache",
}


def playground_dir() -> Traversable:
    return resources.files("toonforge.api") / "playground"


@router.api_route(PAGE_PATH, methods=["GET", "HEAD"], include_in_schema=False)
def page() -> HTMLResponse:
    text = (playground_dir() / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(text, headers=HEADERS)


@router.api_route(ASSET_ROUTE, methods=["GET", "HEAD"], include_in_schema=False)
def asset(name: str) -> Response:
    media = ASSETS.get(name)
    if media is None:
        raise ApiError("Error parsing url.", code=NOT_FOUND, status=404)
    return Response((playground_dir() / name).read_bytes(), media_type=media, headers=HEADERS)
