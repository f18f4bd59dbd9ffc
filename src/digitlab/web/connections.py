"""Read deadlines for HTTP connections: a slow or silent client cannot hold a connection open.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but any byte resets
that timer and nothing bounds the time to send a request's head or body: a "slowloris" client
that drips one header byte every few seconds holds a connection (and its memory) forever. This
protocol (uvicorn's h11 one, which ``digitlab serve`` runs anyway) gives every request
``HEAD_DEADLINE_S`` from the connection's start or its previous response to send its whole head,
then ``BODY_DEADLINE_S`` for its whole body; past either the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_DEADLINE_S = 10.0  # a request head is under 8 KB: even a slow phone link sends it in well under a second
# The largest body (10 MB) at 1 Mbit/s takes ~80 s; a client slower than that is not served.
BODY_DEADLINE_S = 90.0
KEEP_ALIVE_S = 5  # uvicorn's default: an idle keep-alive connection is closed after this

log = logging.getLogger(__name__)


def deadline_protocol(head_s: float = HEAD_DEADLINE_S, body_s: float = BODY_DEADLINE_S) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's head and one for its body."""

    class DeadlineH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired, what, seconds)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self, what: str, seconds: float) -> None:
            self._timer = None
            if not self.transport.is_closing():
                log.info("closing a connection from %s: no whole request %s within %g s", self.client, what, seconds)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(head_s, "head")

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not None and self.cycle is not cycle and not self.cycle.response_complete:
                self._arm(body_s, "body")  # a new request's head has arrived
            if self.cycle is not None and not self.cycle.more_body:
                self._disarm()  # the whole body is in: the app's own deadline takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(head_s, "head")  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol
