"""Who may read the dashboard: the token of its printed URL, and the address it is bound to.

The same stance as the live endpoint (:mod:`cnnprov.storage.endpoint`): a page on another site
that points the browser at ``127.0.0.1`` gets nothing, because it knows no token, and a name
that resolves to 127.0.0.1 (DNS rebinding) is refused by the ``Host:`` check. The token of the
first request is kept in a cookie (``SameSite=Strict``, ``HttpOnly``) so that links within the
dashboard need not carry it; no CORS header is ever sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the cookie's name, per port: browsers send a host's cookies to every port of it, and two
#: dashboards on one machine must not overwrite each other's
COOKIE = "cnnprov_ui_token_{port}"


class TokenGuard:
    """ASGI middleware that answers 403 unless the request names an allowed host and the token.

    Args:
        app: the application it guards.
        token: the secret every request must carry (query ``?token=``, the cookie, or
            ``Authorization: Bearer``).
        hosts: the ``Host:`` values admitted, e.g. ``{"127.0.0.1:8765", "localhost:8765"}``;
            filled in by :meth:`allow_port` once the port is known.
    """

    def __init__(self, app: ASGIApp, token: str, hosts: set[str] | None = None) -> None:
        self.app = app
        self.token = token
        self.hosts: set[str] = set(hosts or ())
        self.cookie = COOKIE.format(port=0)

    def allow_port(self, port: int) -> None:
        self.hosts |= {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.cookie = COOKIE.format(port=port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if headers.get("host", "") not in self.hosts:
            await _refuse(send, "this dashboard answers only at the address it printed (Host header refused)")
            return
        given = self._token_in(scope, headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            await _refuse(send, "open the dashboard with the URL `cnnprov ui` printed: it carries the token")
            return
        from_query = "token=" in scope.get("query_string", b"").decode("latin-1")

        async def send_with_cookie(message: MutableMapping[str, Any]) -> None:
            if from_query and message["type"] == "http.response.start":
                cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _token_in(self, scope: Scope, headers: dict[str, str]) -> str | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
        authorization = headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            return authorization[len("Bearer ") :]
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is a request without the token
            return None
        morsel = cookie.get(self.cookie)
        return morsel.value if morsel is not None else None


async def _refuse(send: Send, reason: str) -> None:
    body = f"403 Forbidden: {reason}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
