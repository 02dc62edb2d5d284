"""
What stands between a client and the service: a request body is counted as it arrives, whatever
its transfer encoding (a ``Content-Length`` or chunks), and a slow client is cut off.

- :class:`BodyGuard` (ASGI middleware): a body over the cap is answered 413 as soon as the read
  that crosses it arrives, and the connection is closed (nothing beyond the cap plus one read is
  received or spooled); a body that stalls for ``read_timeout`` seconds between reads, or takes
  longer than ``deadline`` in all, is answered 408.
- :class:`HeaderTimeoutProtocol` (uvicorn's h11 protocol): a connection whose request headers are
  not complete within ``HEADER_TIMEOUT`` seconds of its start, or of the previous response, is
  closed (uvicorn itself only times out idle keep-alive connections).
"""

from __future__ import annotations

import asyncio

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds for a request's headers
READ_TIMEOUT = 30.0  # seconds between two reads of a body
BODY_DEADLINE = 120.0  # seconds for a whole body (20 MiB at 170 kB/s)


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BodyGuard:
    """ASGI middleware: request bodies of at most ``max_bytes``, arriving in time."""

    def __init__(
        self,
        app,
        max_bytes: int,
        read_timeout: float = READ_TIMEOUT,
        deadline: float = BODY_DEADLINE,
    ):
        self.app, self.max_bytes = app, max_bytes
        self.read_timeout, self.deadline = read_timeout, deadline

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _refuse(scope, receive, send, self._too_large())
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        state = {"received": 0, "complete": False, "started": False}

        async def guarded_receive():
            if state["complete"]:  # the body is in: waiting for a disconnect is not a read
                return await receive()
            timeout = min(self.read_timeout, end - loop.time())
            try:
                if timeout <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                raise _Refused(408, "the upload stalled or took too long; send it again") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > self.max_bytes:
                    raise self._too_large()
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _Refused as e:
            if not state["started"]:
                await _refuse(scope, receive, send, e)

    def _too_large(self) -> _Refused:
        return _Refused(413, f"upload over {self.max_bytes} bytes")


async def _refuse(scope, receive, send, e: _Refused) -> None:
    """The one-line JSON error, and the connection closed: the rest of the body is not read."""
    response = JSONResponse(
        {"error": str(e)}, status_code=e.status, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (slowloris)."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
