"""The HTTP server around the app: uvicorn, with every idle connection bounded in time.

uvicorn's h11 protocol closes a connection that sits idle after a response
(``timeout_keep_alive``) but never one that has not finished sending a request's headers: a
client that opens connections and sends nothing, or a byte now and then, would hold them for
ever. ``HeaderTimeoutProtocol`` closes any connection that has no request in progress
``header_timeout_s`` after it opened or after its last response. A connection that becomes a
WebSocket (``/v1/realtime``) leaves the timer behind: the WebSocket protocol owns it from then.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from omniloom.serving.app import create_app
from omniloom.serving.state import ServerState


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def handle_websocket_upgrade(self, event) -> None:
        self._cancel_header_timer()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_timeout(self) -> None:
        in_request = self.cycle is not None and not self.cycle.response_complete
        if not in_request and not self.transport.is_closing():
            self.transport.close()


def make_server(state: ServerState, host: str, port: int, **config) -> uvicorn.Server:
    """A uvicorn server for the app, with the connection timeouts from the settings."""
    limits = state.settings.limits
    protocol = type(
        "HeaderTimeoutProtocol",
        (HeaderTimeoutProtocol,),
        {"header_timeout_s": limits.header_timeout_s},
    )
    return uvicorn.Server(
        uvicorn.Config(
            create_app(state),
            host=host,
            port=port,
            http=protocol,
            timeout_keep_alive=limits.keep_alive_timeout_s,
            **config,
        )
    )
