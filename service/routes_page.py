"""The web chat page at ``/``: one self-contained HTML file (inline CSS and JS, no external assets, so it
works offline) that talks to the sessions API. Not part of the OpenAPI schema: it is not a JSON endpoint."""

from __future__ import annotations

import logging
import secrets
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.routes_deps import ApiError

log = logging.getLogger("mktod.service")
router = APIRouter(include_in_schema=False)

# Beside this module, not resources.files("service"): under pytest "service" can resolve to tests/service.
_PAGE = Path(__file__).with_name("static") / "index.html"
_NONCE = "__CSP_NONCE__"


@cache
def _page() -> str:
    try:
        return _PAGE.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.error("the chat page %s is missing; reinstall the package (it ships as package data)", _PAGE)
        raise ApiError(
            500, "page_missing", "the chat page is not installed on this server; the server log says where"
        ) from None


def _security_headers(nonce: str) -> dict[str, str]:
    # Defence in depth: the page renders KB strings as text, and even if a bug let markup through, no
    # injected script, inline handler or external resource could run or load.
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


@router.get("/", response_class=HTMLResponse)
def chat_page() -> HTMLResponse:
    """The chat page (a plain ``def``: the first call reads the file, off the event loop)."""
    nonce = secrets.token_urlsafe(16)
    return HTMLResponse(_page().replace(_NONCE, nonce), headers=_security_headers(nonce))
